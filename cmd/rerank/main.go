// Command rerank is the re-ranking worker and its tools. This package only
// wires the others together: flags (with RERANK_* environment defaults) are
// parsed here and nowhere else.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// exitError carries a process exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// command is a subcommand of rerank.
type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error
}

var commands = []command{
	{"serve", "run a re-ranking worker (embedded NATS server unless --nats-url)", cmdServe},
	{"gateway", "serve the HTTP gateway (Cohere/Jina, TEI and async job endpoints) onto the queue", cmdGateway},
	{"submit", "submit a job and print its ranking", cmdSubmit},
	{"provision", "create or update the streams, consumers and bucket (an operator's step when workers run --provision=false)", cmdProvision},
	{"run", "re-rank one job locally, without NATS, and print the result as JSON", cmdRun},
	{"inject", "print the text pairs a model will read for a job", cmdInject},
	{"tokenize", "tokenize JSON lines {a, b, max_length, truncation} like Hugging Face", cmdTokenize},
	{"quantize", "write an int8 copy of a model directory and check its ranking agreement", cmdQuantize},
	{"gen-model", "write a random-weight BERT cross-encoder model directory (tests, demos)", cmdGenModel},
	{"eval", "re-rank a first-stage run and compare MRR@10, nDCG@10, MAP, recall with qrels", cmdEval},
	{"version", "print the build: version, VCS revision and time, Go and ONNX Runtime versions", cmdVersion},
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "rerank re-ranks search candidates with MiniLM cross-encoders over NATS JetStream.")
	fmt.Fprintln(w, "\nUsage: rerank <command> [flags]\n\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'rerank <command> --help' for a command's flags. Every flag also reads RERANK_<FLAG> from the environment.")
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := dispatch(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, errHelp) {
		return
	}
	if err != nil {
		var ee *exitError
		code := 1
		if errors.As(err, &ee) {
			code = ee.code
		}
		fmt.Fprintln(os.Stderr, "rerank:", err)
		os.Exit(code)
	}
}

func dispatch(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		return nil
	}
	if args[0] == "--version" || args[0] == "-version" {
		args = append([]string{"version"}, args[1:]...)
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdin, stdout, stderr)
		}
	}
	usage(stderr)
	return &exitError{2, fmt.Errorf("unknown command %q", args[0])}
}
