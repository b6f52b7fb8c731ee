// The example command over the Go client in client/go. Replace directives apply only in the main module, so this
// one repeats client/go/go.mod's (tests/test_go_client.py checks they agree): each module from Debian's tree under
// /usr/share/gocode, empty stand-ins for those no package builds. Build with GOFLAGS=-mod=mod GOPROXY=off.
module imagewire.dev/examples

go 1.19

require (
	imagewire.dev/client v0.0.0
	github.com/golang/protobuf v1.5.2
	golang.org/x/net v0.7.0
	golang.org/x/sys v0.5.0
	golang.org/x/text v0.7.0
	google.golang.org/genproto v0.0.0-20200526211855-cb27e3aa2013
	google.golang.org/grpc v1.33.3
	google.golang.org/protobuf v1.28.1
)

replace (
	imagewire.dev/client => ../../client/go
	github.com/golang/protobuf => /usr/share/gocode/src/github.com/golang/protobuf
	golang.org/x/net => /usr/share/gocode/src/golang.org/x/net
	golang.org/x/sys => /usr/share/gocode/src/golang.org/x/sys
	golang.org/x/text => /usr/share/gocode/src/golang.org/x/text
	google.golang.org/genproto => /usr/share/gocode/src/google.golang.org/genproto
	google.golang.org/grpc => /usr/share/gocode/src/google.golang.org/grpc
	google.golang.org/protobuf => /usr/share/gocode/src/google.golang.org/protobuf
)

replace (
	github.com/cncf/udpa/go => ../../client/go/offline/github.com/cncf/udpa/go
	github.com/envoyproxy/go-control-plane => ../../client/go/offline/github.com/envoyproxy/go-control-plane
	github.com/golang/glog => ../../client/go/offline/github.com/golang/glog
	github.com/google/go-cmp => ../../client/go/offline/github.com/google/go-cmp
	github.com/google/uuid => ../../client/go/offline/github.com/google/uuid
	golang.org/x/lint => ../../client/go/offline/golang.org/x/lint
	golang.org/x/mod => ../../client/go/offline/golang.org/x/mod
	golang.org/x/oauth2 => ../../client/go/offline/golang.org/x/oauth2
	golang.org/x/term => ../../client/go/offline/golang.org/x/term
	golang.org/x/tools => ../../client/go/offline/golang.org/x/tools
	honnef.co/go/tools => ../../client/go/offline/honnef.co/go/tools
)
