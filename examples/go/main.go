// Command imagewire-go captions images and animates one to a video file through the Go client
// (imagewire.dev/client/imagewire), with the flags of the Python CLI's caption and animate commands:
//
//	imagewire-go caption photo.png other.jpg --target 127.0.0.1:50051 [--prompt "a picture of"]
//	imagewire-go animate photo.png -o out.mp4 --target 127.0.0.1:50052 --num-frames 14 --seed 7
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: imagewire-go caption|animate [flags] IMAGE... (-h for a command's flags)")
		return 2
	}
	var err error
	switch args[0] {
	case "caption":
		err = caption(ctx, args[1:])
	case "animate":
		err = animate(ctx, args[1:])
	default:
		fmt.Fprintf(os.Stderr, "imagewire-go: no command %q: caption or animate\n", args[0])
		return 2
	}
	var usage usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &usage):
		fmt.Fprintln(os.Stderr, "imagewire-go:", err)
		return 2
	case errors.Is(ctx.Err(), context.Canceled):
		fmt.Fprintln(os.Stderr, "interrupted:", err)
		return 130
	default:
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
}
