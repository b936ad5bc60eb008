package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/rerank/rerank/schemas"
)

// readInput reads a file argument, or stdin for "-" or no argument.
func readInput(args []string, stdin io.Reader) ([]byte, string, error) {
	if len(args) > 1 {
		return nil, "", &exitError{2, fmt.Errorf("expected at most one input file, got %d", len(args))}
	}
	if len(args) == 0 || args[0] == "-" {
		b, err := io.ReadAll(io.LimitReader(stdin, 64<<20))
		return b, "stdin", err
	}
	b, err := os.ReadFile(args[0])
	return b, args[0], err
}

// decodeJobInput decodes a job file: JSON when it starts with '{', else msgpack.
func decodeJobInput(data []byte, limits schemas.Limits) (*schemas.Job, schemas.Format, error) {
	f := schemas.Msgpack
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) > 0 && t[0] == '{' {
		f = schemas.JSON
	}
	job, err := schemas.DecodeJob(data, f, limits)
	if ce := schemas.AsError(err); ce != nil && f == schemas.Msgpack {
		err = schemas.Errorf(ce.Code, "neither a JSON job (an object, starting with '{') nor a msgpack one: %s", ce.Message)
	}
	return job, f, err
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// codedExit turns a contract error into exit status 2 with its code.
func codedExit(err error) error {
	if ce := schemas.AsError(err); ce != nil {
		return &exitError{2, ce}
	}
	return err
}
