// The Go client of the imagewire services (the package imagewire.dev/client/imagewire over the stubs generated into
// gen/). It builds offline from Debian's packages (golang-google-grpc-dev, golang-google-protobuf-dev,
// golang-google-genproto-dev and what they pull in): each module it builds is replaced by its Debian source tree
// under /usr/share/gocode, and each module that those trees' go.mod files require without any package of it
// being built is replaced by an empty stand-in under offline/, so that no module proxy is ever asked.
// Build and test with GOFLAGS=-mod=mod GOPROXY=off (the Makefile's go-test target does).
module imagewire.dev/client

go 1.19

require (
	github.com/golang/protobuf v1.5.2
	golang.org/x/net v0.7.0
	golang.org/x/sys v0.5.0
	golang.org/x/text v0.7.0
	google.golang.org/genproto v0.0.0-20200526211855-cb27e3aa2013
	google.golang.org/grpc v1.33.3
	google.golang.org/protobuf v1.28.1
)

replace (
	github.com/golang/protobuf => /usr/share/gocode/src/github.com/golang/protobuf
	golang.org/x/net => /usr/share/gocode/src/golang.org/x/net
	golang.org/x/sys => /usr/share/gocode/src/golang.org/x/sys
	golang.org/x/text => /usr/share/gocode/src/golang.org/x/text
	google.golang.org/genproto => /usr/share/gocode/src/google.golang.org/genproto
	google.golang.org/grpc => /usr/share/gocode/src/google.golang.org/grpc
	google.golang.org/protobuf => /usr/share/gocode/src/google.golang.org/protobuf
)

replace (
	github.com/cncf/udpa/go => ./offline/github.com/cncf/udpa/go
	github.com/envoyproxy/go-control-plane => ./offline/github.com/envoyproxy/go-control-plane
	github.com/golang/glog => ./offline/github.com/golang/glog
	github.com/google/go-cmp => ./offline/github.com/google/go-cmp
	github.com/google/uuid => ./offline/github.com/google/uuid
	golang.org/x/lint => ./offline/golang.org/x/lint
	golang.org/x/mod => ./offline/golang.org/x/mod
	golang.org/x/oauth2 => ./offline/golang.org/x/oauth2
	golang.org/x/term => ./offline/golang.org/x/term
	golang.org/x/tools => ./offline/golang.org/x/tools
	honnef.co/go/tools => ./offline/honnef.co/go/tools
)
