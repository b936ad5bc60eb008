package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
)

// configFile reads a flat TOML file whose keys are flag names:
//
//	nats-url = "nats://a:4222,nats://b:4222"
//	concurrency = 8
//	provision = false
//	model = ["msmarco=/models/msmarco", "bm25=/models/bm25"]
//
// Comments (#) and blank lines are skipped; [section] headers are not
// supported. Values are TOML basic strings, numbers, booleans or arrays of
// strings.
func configFile(path string) (map[string][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading config file: %w", err)
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(stripComment(sc.Text()))
		if line == "" {
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if !ok || key == "" || strings.HasPrefix(line, "[") {
			return nil, fmt.Errorf("%s:%d: want key = value", path, n)
		}
		vals, err := tomlValues(val)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %w", path, n, key, err)
		}
		out[key] = vals
	}
	return out, sc.Err()
}

func stripComment(s string) string {
	inStr := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if inStr {
				i++
			}
		case '"':
			inStr = !inStr
		case '#':
			if !inStr {
				return s[:i]
			}
		}
	}
	return s
}

func tomlValues(v string) ([]string, error) {
	if strings.HasPrefix(v, "[") {
		if !strings.HasSuffix(v, "]") {
			return nil, fmt.Errorf("unclosed array")
		}
		var out []string
		rest := strings.TrimSpace(v[1 : len(v)-1])
		for rest != "" {
			if rest[0] != '"' {
				return nil, fmt.Errorf("arrays hold strings only")
			}
			end := 1
			for end < len(rest) && (rest[end] != '"' || rest[end-1] == '\\') {
				end++
			}
			if end == len(rest) {
				return nil, fmt.Errorf("unclosed string")
			}
			s, err := strconv.Unquote(rest[:end+1])
			if err != nil {
				return nil, err
			}
			out = append(out, s)
			rest = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(rest[end+1:]), ","))
		}
		return out, nil
	}
	if strings.HasPrefix(v, `"`) {
		s, err := strconv.Unquote(v)
		if err != nil {
			return nil, fmt.Errorf("bad string %s", v)
		}
		return []string{s}, nil
	}
	return []string{v}, nil // number, boolean or duration-like bare word
}

// applyConfigFile sets flags from the settings file named by --config
// (when fromArgs) or RERANK_CONFIG, before the environment and the command
// line are applied. A file named by --config is the command's own: a key
// it has no flag for is an error. RERANK_CONFIG is every command's (one
// exported variable reaches serve, submit and inject alike): each takes
// the keys it has flags for and leaves the others to the commands that
// have them; a key no command has is an error.
func applyConfigFile(fs *flag.FlagSet, args []string, fromArgs bool) error {
	path, shared := os.Getenv("RERANK_CONFIG"), true
	if !fromArgs {
		args = nil
	}
	for i, a := range args {
		if a == "--" {
			break
		}
		for _, p := range []string{"--config=", "-config="} {
			if strings.HasPrefix(a, p) {
				path, shared = a[len(p):], false
			}
		}
		if (a == "--config" || a == "-config") && i+1 < len(args) {
			path, shared = args[i+1], false
		}
	}
	if path == "" {
		return nil
	}
	vals, err := configFile(path)
	if err != nil {
		return err
	}
	for k, vs := range vals {
		f := fs.Lookup(k)
		switch {
		case k == "config" || f == nil && !shared:
			return fmt.Errorf("%s: unknown setting %q (keys are flag names of `rerank %s --help`)", path, k, fs.Name())
		case f == nil && !settingNames()[k]:
			return fmt.Errorf("%s (RERANK_CONFIG): unknown setting %q: no rerank command has that flag", path, k)
		}
		if f == nil {
			continue // another command's setting
		}
		for _, v := range vs {
			if err := f.Value.Set(v); err != nil {
				return fmt.Errorf("%s: %s = %q: %w", path, k, v, err)
			}
		}
		if m, ok := f.Value.(*multiFlag); ok {
			m.set = false // the environment or command line replaces it
		}
	}
	return nil
}

// secretFlags are masked by --print-config: URLs lose their passwords,
// tokens their whole value.
var secretFlags = map[string]func(string) string{
	"nats-url": redact,
	"gateway-tokens": func(v string) string {
		if v == "" {
			return ""
		}
		return "***"
	},
}

// writeConfig prints the effective configuration as the config file format.
func writeConfig(w io.Writer, fs *flag.FlagSet) error {
	var lines []string
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "print-config" || f.Name == "config" {
			return
		}
		v := f.Value.String()
		if mask := secretFlags[f.Name]; mask != nil {
			v = mask(v)
		}
		if m, ok := f.Value.(*multiFlag); ok {
			q := make([]string, len(m.values))
			for i, s := range m.values {
				q[i] = strconv.Quote(s)
			}
			lines = append(lines, fmt.Sprintf("%s = [%s]", f.Name, strings.Join(q, ", ")))
			return
		}
		switch f.Value.(interface{ Get() any }).Get().(type) {
		case string:
			v = strconv.Quote(v)
		case interface{ String() string }: // durations
			v = strconv.Quote(v)
		}
		lines = append(lines, fmt.Sprintf("%s = %s", f.Name, v))
	})
	sort.Strings(lines)
	_, err := fmt.Fprintln(w, strings.Join(lines, "\n"))
	return err
}
