package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
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

// parse parses args after applying the settings file and environment
// defaults. --help, and --print-config (every command's: the effective
// settings on stdout, secrets masked), return errHelp: done, not an error.
func parse(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	if len(args) == 1 && args[0] == collectFlagsArg {
		fs.VisitAll(func(f *flag.Flag) { collected[f.Name] = true })
		return errHelp
	}
	// A command with a --config of its own (inject: a model's rerank.json)
	// reads the settings file from RERANK_CONFIG only.
	own := fs.Lookup("config") != nil
	if !own {
		fs.String("config", "", "settings file (flat TOML, keys are flag names; RERANK_CONFIG too); precedence: flags > RERANK_* env > file > defaults")
	}
	printConfig := fs.Bool("print-config", false, "print the effective settings (flags > RERANK_* env > settings file > defaults; secrets masked) and exit")
	if err := applyConfigFile(fs, args, !own); err != nil {
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
	if *printConfig {
		if err := writeConfig(stdout, fs); err != nil {
			return err
		}
		return errHelp
	}
	return nil
}

// collectFlagsArg, a command's only argument, makes parse record the
// command's flag names in collected and stop: settingNames runs every
// command so.
const collectFlagsArg = "\x00collect-flags"

// collected is written by parse for collectFlagsArg, only under
// settingNames's sync.Once.
var collected map[string]bool

// everyCommand is commands, set by init: a function that ranges over
// commands from parse would be an initialization cycle.
var everyCommand []command

func init() { everyCommand = commands }

// settingNames are the flag names of every command: the keys a shared
// settings file (RERANK_CONFIG) may hold.
var settingNames = sync.OnceValue(func() map[string]bool {
	collected = map[string]bool{}
	for _, c := range everyCommand {
		_ = c.run(context.Background(), []string{collectFlagsArg}, strings.NewReader(""), io.Discard, io.Discard)
	}
	names := collected
	collected = nil
	return names
})

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
