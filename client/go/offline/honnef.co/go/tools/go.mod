// An empty stand-in for a module that a dependency's go.mod requires and no package of imagewire.dev/client
// builds (see client/go/go.mod).
module honnef.co/go/tools
