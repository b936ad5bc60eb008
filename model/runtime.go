package model

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// ORTVersion is the ONNX Runtime release this build is made and tested for.
const ORTVersion = "1.29.0"

// EnvLibrary names the environment variable that overrides the library path.
const EnvLibrary = "ONNXRUNTIME_LIB"

// DefaultLibraryPath returns where the library is looked for: $ONNXRUNTIME_LIB,
// else .cache/onnxruntime/<version>/libonnxruntime.so.1 where FindUp finds
// it (where `make ort` puts it), else that relative path.
func DefaultLibraryPath() string {
	if p := os.Getenv(EnvLibrary); p != "" {
		return p
	}
	rel := filepath.Join(".cache", "onnxruntime", ORTVersion, "libonnxruntime.so.1")
	if p := FindUp(rel); p != "" {
		return p
	}
	return rel
}

// FindUp looks for the relative path rel in the working directory and its
// parents, then in the directory of the running binary and its parents
// (bin/rerank of a checkout finds the checkout's .cache from anywhere);
// "" when it is in none.
func FindUp(rel string) string {
	var roots []string
	if wd, err := os.Getwd(); err == nil {
		roots = append(roots, wd)
	}
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			roots = append(roots, filepath.Dir(exe))
		}
	}
	for _, dir := range roots {
		for {
			p := filepath.Join(dir, rel)
			if _, err := os.Stat(p); err == nil {
				return p
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return ""
}

// The ONNX Runtime environment is process-wide: one per process, shared by
// every Runtime handle and reference-counted so the last Close destroys it.
var env struct {
	sync.Mutex
	refs int
	lib  string
}

// Runtime is a handle on the process's ONNX Runtime environment. Models are
// loaded through it. Close is idempotent.
type Runtime struct {
	once sync.Once
}

// OpenRuntime initializes the process's ONNX Runtime environment from the
// shared library at libPath ("" means DefaultLibraryPath), or joins the one
// already initialized.
func OpenRuntime(libPath string) (*Runtime, error) {
	if libPath == "" {
		libPath = DefaultLibraryPath()
	}
	if _, err := os.Stat(libPath); err != nil {
		return nil, fmt.Errorf("%w at %s: run `make ort` or set %s to libonnxruntime.so (version %s)",
			ErrRuntimeMissing, libPath, EnvLibrary, ORTVersion)
	}
	env.Lock()
	defer env.Unlock()
	if env.refs > 0 {
		if libPath != env.lib {
			return nil, fmt.Errorf("opening ONNX Runtime %s: the process already uses %s", libPath, env.lib)
		}
		env.refs++
		return &Runtime{}, nil
	}
	ort.SetSharedLibraryPath(libPath)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		return nil, fmt.Errorf("initializing ONNX Runtime from %s: %w", libPath, err)
	}
	env.refs, env.lib = 1, libPath
	return &Runtime{}, nil
}

// Version returns the loaded ONNX Runtime version.
func (r *Runtime) Version() string { return ort.GetVersion() }

// Close releases this handle; the last one destroys the environment.
func (r *Runtime) Close() error {
	var err error
	r.once.Do(func() {
		env.Lock()
		defer env.Unlock()
		env.refs--
		if env.refs == 0 {
			if e := ort.DestroyEnvironment(); e != nil {
				err = fmt.Errorf("destroying ONNX Runtime environment: %w", e)
			}
			env.lib = ""
		}
	})
	return err
}

// Device selects the execution provider.
type Device struct {
	CUDA bool
	ID   int
}

func (d Device) String() string {
	if d.CUDA {
		return "cuda:" + strconv.Itoa(d.ID)
	}
	return "cpu"
}

// ParseDevice parses "cpu", "cuda" or "cuda:N".
func ParseDevice(s string) (Device, error) {
	switch {
	case s == "" || s == "cpu":
		return Device{}, nil
	case s == "cuda":
		return Device{CUDA: true}, nil
	case strings.HasPrefix(s, "cuda:"):
		n, err := strconv.Atoi(s[len("cuda:"):])
		if err != nil || n < 0 {
			return Device{}, fmt.Errorf("parsing device %q: want cpu, cuda or cuda:N", s)
		}
		return Device{CUDA: true, ID: n}, nil
	}
	return Device{}, fmt.Errorf("parsing device %q: want cpu, cuda or cuda:N", s)
}

// Options tune a loaded model. Zero values mean the defaults.
type Options struct {
	Device Device
	// IntraOpThreads is ORT's thread count within one run; default: the
	// CPUs this process may use (GOMAXPROCS, which honours a container's
	// CPU quota). Each model's session has its own pool (onnxruntime_go
	// does not reach ORT's global thread pools): with several models,
	// divide the CPUs between them.
	IntraOpThreads int
	// Spin sets whether ORT's intra-op threads spin while waiting for
	// work (faster hand-offs, a busy core while idle); nil keeps ORT's
	// default (spinning).
	Spin *bool
	// InterOpThreads is ORT's thread count across graph branches; default 1.
	InterOpThreads int
	// ConcurrentRuns bounds ORT runs in flight on this model; default 1
	// (one run already uses every intra-op thread).
	ConcurrentRuns int
	// MaxBatchSize bounds the pairs in one ORT run; default 16 on CPU
	// (bigger batches add memory, not speed), 128 on CUDA.
	MaxBatchSize int
	// MaxBatchTokens bounds batch × longest sequence in one run; default
	// 4,096 on CPU, 32,768 on CUDA.
	MaxBatchTokens int
	// MaxBatchCells bounds batch × longest sequence², the size of one
	// attention matrix per head, which dominates memory on long passages;
	// default 524,288 on CPU (8 pairs of 256 tokens, 2 of 512), 8,388,608
	// on CUDA (32 pairs of 512).
	MaxBatchCells int
	// MaxBatchPadding bounds one run's padded tokens ÷ its real tokens:
	// the pairs of one scoring call, sorted by length, are cut into a new
	// run where the next pair would push the run past it. A CPU run costs
	// what its padded tokens cost and little per run, so a call that mixes
	// short and long pairs (several small jobs' pairs) is cheaper as a few
	// runs of like lengths. Default 1.25 on CPU; off on CUDA, where a run's
	// size matters more than its padding; negative: off.
	MaxBatchPadding float64
	// NoLengthSort pads batches in arrival order (benchmarks only).
	NoLengthSort bool
	// ModelFile, when set, is the ONNX graph to load instead of the
	// directory's own (for example onnx/model_quantized.onnx), relative to
	// the model directory or absolute.
	ModelFile string
	// LoadAsIs hands onnxruntime the model file as it is. By default it
	// gets a prepared copy of the graph (prepare.go): weights mapped from
	// the file (a cold start 0.6 s shorter for the L12 model, a lower
	// peak; a served file must then never be rewritten in place, only
	// renamed over) and, on CPU, residual LayerNormalizations fused (12 %
	// of an fp32 L12 run).
	LoadAsIs bool
}

// Default batch limits on CPU, where a worker's memory matters more than
// batch size (throughput is flat beyond a few pairs, BENCHMARKS.md) …
const (
	DefaultMaxBatchSize    = 16
	DefaultMaxBatchTokens  = 4096
	DefaultMaxBatchCells   = 1 << 19
	DefaultMaxBatchPadding = 1.25
)

// … and on CUDA, where per-run overhead makes large batches pay.
const (
	DefaultCUDAMaxBatchSize   = 128
	DefaultCUDAMaxBatchTokens = 32768
	DefaultCUDAMaxBatchCells  = 1 << 23
)

// WithDefaults returns o with zero fields set to their defaults.
func (o Options) WithDefaults() Options { return o.withDefaults() }

func (o Options) withDefaults() Options {
	if o.IntraOpThreads <= 0 {
		// GOMAXPROCS honours the container's CPU quota (cgroup v2);
		// NumCPU counts the node's cores.
		o.IntraOpThreads = runtime.GOMAXPROCS(0)
	}
	if o.InterOpThreads <= 0 {
		o.InterOpThreads = 1
	}
	if o.ConcurrentRuns <= 0 {
		o.ConcurrentRuns = 1
	}
	size, tokens, cells := DefaultMaxBatchSize, DefaultMaxBatchTokens, DefaultMaxBatchCells
	if o.Device.CUDA {
		size, tokens, cells = DefaultCUDAMaxBatchSize, DefaultCUDAMaxBatchTokens, DefaultCUDAMaxBatchCells
	}
	if o.MaxBatchSize <= 0 {
		o.MaxBatchSize = size
	}
	if o.MaxBatchTokens <= 0 {
		o.MaxBatchTokens = tokens
	}
	if o.MaxBatchCells <= 0 {
		o.MaxBatchCells = cells
	}
	if o.MaxBatchPadding == 0 && !o.Device.CUDA {
		o.MaxBatchPadding = DefaultMaxBatchPadding
	}
	return o
}

func (o *Options) sessionOptions() (*ort.SessionOptions, error) {
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("creating session options: %w", err)
	}
	fail := func(what string, err error) (*ort.SessionOptions, error) {
		so.Destroy()
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := so.SetIntraOpNumThreads(o.IntraOpThreads); err != nil {
		return fail("setting intra-op threads", err)
	}
	if err := so.SetInterOpNumThreads(o.InterOpThreads); err != nil {
		return fail("setting inter-op threads", err)
	}
	if o.Spin != nil {
		v := "0"
		if *o.Spin {
			v = "1"
		}
		if err := so.AddSessionConfigEntry("session.intra_op.allow_spinning", v); err != nil {
			return fail("setting intra-op spinning", err)
		}
	}
	if err := so.SetGraphOptimizationLevel(ort.GraphOptimizationLevelEnableAll); err != nil {
		return fail("setting graph optimization level", err)
	}
	if o.Device.CUDA {
		cuda, err := ort.NewCUDAProviderOptions()
		if err != nil {
			return fail("creating CUDA provider options", fmt.Errorf("%w: %w", ErrDeviceUnavailable, err))
		}
		defer cuda.Destroy()
		if err := cuda.Update(map[string]string{"device_id": strconv.Itoa(o.Device.ID)}); err != nil {
			return fail("configuring CUDA provider", fmt.Errorf("%w: %w", ErrDeviceUnavailable, err))
		}
		if err := so.AppendExecutionProviderCUDA(cuda); err != nil {
			return fail("enabling the CUDA execution provider (it needs libonnxruntime_providers_cuda.so beside the ORT library, CUDA 12 and cuDNN 9, and a GPU)",
				fmt.Errorf("%w: %w", ErrDeviceUnavailable, err))
		}
	}
	return so, nil
}
