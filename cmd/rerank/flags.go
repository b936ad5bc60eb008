package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

var errHelp = errors.New("help requested")

// newFlags returns a flag set whose defaults may come from RERANK_* env vars.
func newFlags(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: rerank %s %s\n\nFlags (each also read from RERANK_<NAME>, e.g. --nats-url from RERANK_NATS_URL):\n", name, usage)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args after applying environment defaults; --help is not an error.
func parse(fs *flag.FlagSet, args []string) error {
	if fs.Lookup("config") == nil {
		fs.String("config", "", "config file (flat TOML, keys are flag names); precedence: flags > RERANK_* env > file > defaults")
	}
	if err := applyConfigFile(fs, args); err != nil {
		return &exitError{2, err}
	}
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := os.LookupEnv(envName(f.Name)); ok && f.Name != "config" {
			if err := f.Value.Set(v); err != nil && envErr == nil {
				envErr = fmt.Errorf("parsing %s=%q: %w", envName(f.Name), v, err)
			}
			f.DefValue = v
			if m, ok := f.Value.(*multiFlag); ok {
				m.set = false // a command-line value replaces the env default
			}
		}
	})
	if envErr != nil {
		return &exitError{2, envErr}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return &exitError{2, err}
	}
	return nil
}

func envName(flagName string) string {
	return "RERANK_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// multiFlag is a repeatable flag; from the environment it splits on commas.
type multiFlag struct {
	values []string
	set    bool
}

func (m *multiFlag) String() string { return strings.Join(m.values, ",") }
func (m *multiFlag) Set(v string) error {
	if !m.set { // the first Set replaces the env default
		m.values, m.set = nil, true
	}
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			m.values = append(m.values, s)
		}
	}
	return nil
}
