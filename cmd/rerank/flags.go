package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rerank/rerank/model"
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

// natsFlags are the connection flags shared by serve and submit.
type natsFlags struct {
	url, creds, nkey, tlsCA, tlsCert, tlsKey, inbox string
}

func (n *natsFlags) register(fsDefaultURL string, add func(p *string, name, value, usage string)) {
	add(&n.url, "nats-url", fsDefaultURL, "NATS server URLs, comma-separated (user:password@ allowed)")
	add(&n.creds, "nats-creds", "", "NATS credentials file (JWT + NKEY seed)")
	add(&n.nkey, "nats-nkey", "", "NATS NKEY seed file")
	add(&n.tlsCA, "tls-ca", "", "CA certificate file to verify the NATS server")
	add(&n.tlsCert, "tls-cert", "", "client certificate file for TLS")
	add(&n.tlsKey, "tls-key", "", "client key file for TLS")
	add(&n.inbox, "nats-inbox-prefix", "", "prefix of this process's reply subjects (JetStream API answers, pulled jobs), e.g. _INBOX_search: grant each NATS user only its own (deploy/nats/accounts.conf) so that nobody reads another's jobs in flight (empty: NATS's _INBOX)")
}

func (n *natsFlags) options(name string, log *slog.Logger) ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectJitter(500*time.Millisecond, 2*time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: we closed it ourselves
				log.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("NATS reconnected", "url", c.ConnectedUrlRedacted())
		}),
		nats.ClosedHandler(func(*nats.Conn) { log.Info("NATS connection closed") }),
	}
	if n.inbox != "" {
		if strings.ContainsAny(n.inbox, "*> \t\r\n") || strings.HasSuffix(n.inbox, ".") || strings.HasPrefix(n.inbox, ".") || strings.Contains(n.inbox, "..") {
			return nil, fmt.Errorf("--nats-inbox-prefix %q: a subject without wildcards, spaces or empty tokens", n.inbox)
		}
		opts = append(opts, nats.CustomInboxPrefix(n.inbox))
	}
	if n.creds != "" {
		opts = append(opts, nats.UserCredentials(n.creds))
	}
	if n.nkey != "" {
		o, err := nats.NkeyOptionFromSeed(n.nkey)
		if err != nil {
			return nil, fmt.Errorf("reading NKEY seed %s: %w", n.nkey, err)
		}
		opts = append(opts, o)
	}
	if n.tlsCA != "" {
		opts = append(opts, nats.RootCAs(n.tlsCA))
	}
	if n.tlsCert != "" || n.tlsKey != "" {
		if n.tlsCert == "" || n.tlsKey == "" {
			return nil, fmt.Errorf("--tls-cert and --tls-key go together")
		}
		opts = append(opts, nats.ClientCert(n.tlsCert, n.tlsKey))
	}
	return opts, nil
}

// serviceFlags are the flags every long-running command (serve, gateway)
// has: logging.
type serviceFlags struct {
	logFormat, logLevel string
}

func (f *serviceFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.logFormat, "log-format", "json", "log format: json or text")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
}

// start parses args and returns the command's logger (errHelp after
// --help or --print-config).
func (f *serviceFlags) start(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (*slog.Logger, error) {
	if err := parse(fs, args, stdout); err != nil {
		return nil, err
	}
	log, err := newLogger(f.logFormat, f.logLevel, stderr)
	if err != nil {
		return nil, &exitError{2, err}
	}
	log.Info("rerank "+fs.Name()+" starting", buildAttrs()...)
	return log, nil
}

func newLogger(format, level string, w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("parsing --log-level %q: %w", level, err)
	}
	o := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, o)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, o)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want json or text", format)
}

// modelFlags are the inference flags shared by serve and run.
type modelFlags struct {
	models                   multiFlag
	ortLib, device, spin     string
	intraOp, interOp, runs   int
	maxBatch, maxBatchTokens int
	maxBatchCells            int
	maxBatchPadding          float64
	loadAsIs                 bool
}

func (m *modelFlags) register(fs *flag.FlagSet) {
	fs.Var(&m.models, "model", "model to serve, NAME=DIR or DIR (repeatable; default: the demo model as \"demo\")")
	m.registerRuntime(fs)
}

// registerRuntime registers the ONNX Runtime flags without --model (for
// commands that name their models otherwise).
func (m *modelFlags) registerRuntime(fs *flag.FlagSet) {
	fs.StringVar(&m.ortLib, "ort-lib", "", "path of libonnxruntime.so (default $ONNXRUNTIME_LIB, else .cache/onnxruntime/"+model.ORTVersion+"/ under the working directory, the binary's directory, or a parent of either)")
	fs.StringVar(&m.device, "device", "cpu", "execution device: cpu, cuda or cuda:N")
	fs.IntVar(&m.intraOp, "intra-op-threads", 0, "ONNX Runtime threads per run (0: the CPUs this process may use, honouring a container's CPU quota, divided between the models)")
	fs.StringVar(&m.spin, "intra-op-spin", "auto", "ONNX Runtime threads spin while idle: on, off, or auto (on, unless the models' threads together exceed the CPUs)")
	fs.IntVar(&m.interOp, "inter-op-threads", 1, "ONNX Runtime threads across graph branches")
	fs.IntVar(&m.runs, "concurrent-runs", 1, "ONNX Runtime runs in flight per model")
	fs.IntVar(&m.maxBatch, "max-batch-size", 0, fmt.Sprintf("pairs per inference batch (0: %d on cpu, %d on cuda)", model.DefaultMaxBatchSize, model.DefaultCUDAMaxBatchSize))
	fs.IntVar(&m.maxBatchTokens, "max-batch-tokens", 0, fmt.Sprintf("batch size × longest sequence per inference batch (0: %d on cpu, %d on cuda)", model.DefaultMaxBatchTokens, model.DefaultCUDAMaxBatchTokens))
	fs.BoolVar(&m.loadAsIs, "load-as-is", false, "hand ONNX Runtime the model files as they are: weights read into memory, no fused LayerNormalizations (by default weights are mapped from the files, which must then never be rewritten in place)")
	fs.IntVar(&m.maxBatchCells, "max-batch-cells", 0, fmt.Sprintf("batch size × longest sequence² per inference batch, bounds attention memory (0: %d on cpu, %d on cuda)", model.DefaultMaxBatchCells, model.DefaultCUDAMaxBatchCells))
	fs.Float64Var(&m.maxBatchPadding, "max-batch-padding", 0, fmt.Sprintf("padded ÷ real tokens of one inference batch: a scoring call's pairs, sorted by length, are cut into batches of like lengths (0: %g on cpu, off on cuda; negative: off)", model.DefaultMaxBatchPadding))
}

// options are the model options for n models: unless set, the intra-op
// threads are the process's CPUs divided between the models (each session
// has its own pool), and spinning is off when the sessions' threads
// together exceed the CPUs.
func (m *modelFlags) options(n int) (model.Options, error) {
	dev, err := model.ParseDevice(m.device)
	if err != nil {
		return model.Options{}, err
	}
	intra := m.intraOp
	if intra <= 0 {
		intra = max(1, runtime.GOMAXPROCS(0)/max(n, 1))
	}
	var spin *bool
	switch m.spin {
	case "on":
		spin = new(true)
	case "off":
		spin = new(false)
	case "auto", "":
		// Spinning threads of several sessions that share the CPUs take
		// turns away from each other: off when they oversubscribe them.
		if intra*max(n, 1) > runtime.GOMAXPROCS(0) {
			spin = new(false)
		}
	default:
		return model.Options{}, fmt.Errorf("--intra-op-spin %q: want on, off or auto", m.spin)
	}
	return model.Options{Device: dev, IntraOpThreads: intra, InterOpThreads: m.interOp, Spin: spin,
		ConcurrentRuns: m.runs, MaxBatchSize: m.maxBatch, MaxBatchTokens: m.maxBatchTokens, MaxBatchCells: m.maxBatchCells,
		MaxBatchPadding: m.maxBatchPadding, LoadAsIs: m.loadAsIs}, nil
}

func (m *modelFlags) load() (*loadedModels, error) {
	specs, err := parseModelSpecs(m.models.values)
	if err != nil {
		return nil, err
	}
	opts, err := m.options(len(specs))
	if err != nil {
		return nil, err
	}
	return loadModels(m.ortLib, specs, opts)
}
