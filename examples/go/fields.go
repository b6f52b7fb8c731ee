package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// requestFlags adds a flag for each field of msg but its image, named like the Python CLI's (num_frames ->
// --num-frames); a flag given on the command line sets its field, an absent one leaves the field to the server.
func requestFlags(fs *flag.FlagSet, msg proto.Message, skip ...string) {
	fields := msg.ProtoReflect().Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		field := fields.Get(i)
		if field.Name() == "image" || contains(skip, string(field.Name())) {
			continue
		}
		name := strings.ReplaceAll(string(field.Name()), "_", "-")
		usage := fmt.Sprintf("the request's %s (default: the server's)", field.Name())
		set := func(value string) error { return setField(msg.ProtoReflect(), field, value) }
		if field.Kind() == protoreflect.BoolKind {
			fs.Var(boolFlag(set), name, usage)
		} else {
			fs.Func(name, usage, set)
		}
	}
}

// boolFlag is a flag that takes no value (--safety-check), setting its field to true.
type boolFlag func(string) error

func (f boolFlag) Set(value string) error { return f(value) }
func (f boolFlag) String() string         { return "" }
func (f boolFlag) IsBoolFlag() bool       { return true }

func setField(msg protoreflect.Message, field protoreflect.FieldDescriptor, text string) error {
	var value protoreflect.Value
	switch field.Kind() {
	case protoreflect.StringKind:
		value = protoreflect.ValueOfString(text)
	case protoreflect.BoolKind:
		parsed, err := strconv.ParseBool(text)
		if err != nil {
			return err
		}
		value = protoreflect.ValueOfBool(parsed)
	case protoreflect.Uint32Kind:
		parsed, err := strconv.ParseUint(text, 10, 32)
		if err != nil {
			return err
		}
		value = protoreflect.ValueOfUint32(uint32(parsed))
	case protoreflect.Uint64Kind:
		parsed, err := strconv.ParseUint(text, 10, 64)
		if err != nil {
			return err
		}
		value = protoreflect.ValueOfUint64(parsed)
	case protoreflect.FloatKind:
		parsed, err := strconv.ParseFloat(text, 32)
		if err != nil {
			return err
		}
		value = protoreflect.ValueOfFloat32(float32(parsed))
	case protoreflect.EnumKind:
		number, err := enumValue(field.Enum(), text)
		if err != nil {
			return err
		}
		value = protoreflect.ValueOfEnum(number)
	default:
		return fmt.Errorf("a %s field has no flag", field.Kind())
	}
	msg.Set(field, value)
	return nil
}

// enumValue accepts a value's full name (VIDEO_FORMAT_WEBM_VP9) or its end (webm_vp9, webm: the first that
// matches).
func enumValue(enum protoreflect.EnumDescriptor, text string) (protoreflect.EnumNumber, error) {
	values := enum.Values()
	var names []string
	for i := 0; i < values.Len(); i++ {
		name := string(values.Get(i).Name())
		lower := strings.ToLower(name)
		names = append(names, lower)
		if strings.EqualFold(name, text) || strings.HasSuffix(lower, "_"+strings.ToLower(text)) ||
			strings.Contains(lower, "_"+strings.ToLower(text)+"_") {
			return values.Get(i).Number(), nil
		}
	}
	return 0, fmt.Errorf("not one of %s", strings.Join(names, ", "))
}

func contains(names []string, name string) bool {
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}
