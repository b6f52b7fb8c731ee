package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	animatev1 "imagewire.dev/client/gen/imagewire/animate/v1"
	captionv1 "imagewire.dev/client/gen/imagewire/caption/v1"
	"imagewire.dev/client/imagewire"
)

// usageError is a command line refused before anything is sent (exit 2).
type usageError struct{ error }

// parse parses flags and positional arguments in any order, as the Python CLI's argparse does.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageError{err}
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func caption(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("caption", flag.ContinueOnError)
	fields := &captionv1.CaptionRequest{}
	requestFlags(fs, fields)
	asJSON := fs.Bool("json", false, "print one JSON object per image (default: the text)")
	conn := connectionFlags(fs, "IMAGEWIRE_CAPTION_TARGET", "127.0.0.1:50051", 30*time.Second)
	images, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(images) == 0 {
		return usageError{fmt.Errorf("caption: give at least one image")}
	}
	opts, err := conn.options()
	if err != nil {
		return err
	}
	client, err := imagewire.NewCaptionClient(conn.target, opts...)
	if err != nil {
		return err
	}
	defer client.Close()
	for _, path := range images {
		image, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		result, err := client.Caption(ctx, image, imagewire.WithFields(fields))
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if *asJSON {
			line, _ := json.Marshal(map[string]any{"image": path, "text": result.GetText(),
				"model_id": result.GetModelId(), "price_usd": result.GetUsage().GetPriceUsd()})
			fmt.Println(string(line))
		} else {
			fmt.Printf("%s: %s\n", path, result.GetText())
		}
	}
	return nil
}

func animate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("animate", flag.ContinueOnError)
	fields := &animatev1.AnimateRequest{}
	requestFlags(fs, fields)
	var output string
	fs.StringVar(&output, "o", "", "the video file to write (.mp4 or .webm)")
	fs.StringVar(&output, "output", "", "the video file to write (.mp4 or .webm)")
	quiet := fs.Bool("quiet", false, "no progress display (default: progress on stderr)")
	conn := connectionFlags(fs, "IMAGEWIRE_ANIMATE_TARGET", "127.0.0.1:50052", 900*time.Second)
	images, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(images) != 1 || output == "" {
		return usageError{fmt.Errorf("animate: give one image and -o OUT.mp4")}
	}
	if err := formatFromExtension(fields, output); err != nil {
		return err
	}
	image, err := os.ReadFile(images[0])
	if err != nil {
		return err
	}
	opts, err := conn.options()
	if err != nil {
		return err
	}
	client, err := imagewire.NewAnimateClient(conn.target, opts...)
	if err != nil {
		return err
	}
	defer client.Close()
	file, err := os.Create(output)
	if err != nil {
		return err
	}
	progress := io.Discard
	if !*quiet {
		progress = os.Stderr
	}
	result, err := client.Animate(ctx, image, file, imagewire.WithFields(fields),
		imagewire.WithEvents(func(event *animatev1.AnimateResponse) { report(progress, event) }))
	if closeErr := file.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		os.Remove(output)
		return err
	}
	fmt.Printf("%s: %d bytes, sha256 %x, seed %d\n", output, result.GetTotalBytes(), result.GetSha256(),
		result.GetSeed())
	return nil
}

// formatFromExtension sets the request's format from the output's extension, as the Python CLI does; a --format
// that contradicts it is refused.
func formatFromExtension(fields *animatev1.AnimateRequest, output string) error {
	byExtension := map[string]animatev1.VideoFormat{".mp4": animatev1.VideoFormat_VIDEO_FORMAT_MP4_H264,
		".webm": animatev1.VideoFormat_VIDEO_FORMAT_WEBM_VP9}
	format, ok := byExtension[strings.ToLower(filepath.Ext(output))]
	if !ok {
		return usageError{fmt.Errorf("animate: %s: the extension names no video format (.mp4 or .webm)", output)}
	}
	if fields.Format != animatev1.VideoFormat_VIDEO_FORMAT_UNSPECIFIED && fields.Format != format {
		return usageError{fmt.Errorf("animate: --format %s contradicts %s", fields.Format, output)}
	}
	fields.Format = format
	return nil
}

// report prints one line per event that says how far the job has come.
func report(w io.Writer, event *animatev1.AnimateResponse) {
	switch e := event.GetEvent().(type) {
	case *animatev1.AnimateResponse_Job:
		fmt.Fprintf(w, "job %s %s\n", e.Job.GetJobId(), e.Job.GetState())
	case *animatev1.AnimateResponse_Progress:
		p := e.Progress
		if p.GetSegments() > 1 {
			fmt.Fprintf(w, "segment %d/%d ", p.GetSegment(), p.GetSegments())
		}
		fmt.Fprintf(w, "%s %d/%d\n", p.GetStage(), p.GetStep(), p.GetTotal())
	case *animatev1.AnimateResponse_Preview:
		fmt.Fprintf(w, "preview at step %d/%d of segment %d\n", e.Preview.GetStep(), e.Preview.GetTotal(),
			e.Preview.GetSegment())
	case *animatev1.AnimateResponse_Header:
		h := e.Header
		fmt.Fprintf(w, "video %s %dx%d, %d frames at %d fps, seed %d\n", h.GetMimeType(), h.GetWidth(),
			h.GetHeight(), h.GetNumFrames(), h.GetFps(), h.GetSeed())
	}
}
