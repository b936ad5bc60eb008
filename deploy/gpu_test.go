package deploy_test

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rerank/rerank/internal/testenv"
)

// The GPU bundle, with a 300 KB stand-in for the CUDA provider cut into
// 64 KiB pieces: it builds, every file fits the piece size, run.sh
// reassembles the provider to the right checksum, refuses a damaged piece,
// and fails clearly on a machine without a GPU (this one).
func TestGPUBundle(t *testing.T) {
	root := testenv.RepoRoot(t)
	work := t.TempDir()
	provider := make([]byte, 300<<10)
	rand.Read(provider[:100<<10]) // part random, part compressible
	fake := filepath.Join(work, "libonnxruntime_providers_cuda.so")
	core := filepath.Join(work, "libonnxruntime.so")
	for p, b := range map[string][]byte{fake: provider, core: []byte("core")} {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bundle := filepath.Join(work, "bundle")
	const piece = 64 << 10
	cmd := exec.Command(filepath.Join(root, "scripts", "gpu-bundle.sh"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GPU_BUNDLE_DIR="+bundle, "GPU_BUNDLE_PIECE=65536",
		"GPU_BUNDLE_CUDA_LIB="+fake, "GPU_BUNDLE_CORE_LIB="+core, "GPU_BUNDLE_TOKENIZER="+testenv.TokenizerJSON(t))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gpu-bundle.sh: %v\n%s", err, out)
	}
	pieces, _ := filepath.Glob(filepath.Join(bundle, "libonnxruntime_providers_cuda.so.xz.*"))
	if len(pieces) < 2 {
		t.Fatalf("%d pieces: the stand-in should need several", len(pieces))
	}
	for _, p := range pieces {
		if fi, err := os.Stat(p); err != nil || fi.Size() > piece {
			t.Errorf("%s: over the piece size (%v)", p, err)
		}
	}
	filepath.Walk(bundle, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && fi.Size() > 60<<20 {
			t.Errorf("%s is %d bytes, over 60 MiB", p, fi.Size())
		}
		return nil
	})
	for _, f := range []string{"rerank", "rerank-bench", "tokenizer.json", "lib/libonnxruntime.so.1", "run.sh", "README.md", "SHA256SUMS", "SHA256SUMS.provider"} {
		if _, err := os.Stat(filepath.Join(bundle, f)); err != nil {
			t.Errorf("the bundle lacks %s", f)
		}
	}

	run := func() (string, int) {
		cmd := exec.Command("./run.sh")
		cmd.Dir = bundle
		cmd.Env = append(os.Environ(), "PATH=/usr/bin:/bin") // no nvidia-smi here
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	out, code := run()
	if code != 3 || !strings.Contains(out, "bundle verified") || !strings.Contains(out, "no NVIDIA GPU visible") {
		t.Fatalf("run.sh without a GPU: exit %d\n%s", code, out)
	}
	got, err := os.ReadFile(filepath.Join(bundle, "lib", "libonnxruntime_providers_cuda.so"))
	if err != nil || !bytes.Equal(got, provider) {
		t.Fatalf("the reassembled provider differs from the original (%v)", err)
	}
	// A damaged piece is refused before anything runs.
	os.Remove(filepath.Join(bundle, "lib", "libonnxruntime_providers_cuda.so"))
	b, _ := os.ReadFile(pieces[0])
	b[len(b)/2] ^= 0xff
	os.WriteFile(pieces[0], b, 0o644)
	if out, code := run(); code != 1 || !strings.Contains(out, "damaged") {
		t.Fatalf("run.sh with a damaged piece: exit %d\n%s", code, out)
	}
}
