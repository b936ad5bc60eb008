//go:build unix

package model

import (
	"fmt"
	"os"
	"syscall"
)

// mapFile maps the file at path read-only, and returns what it mapped
// (fi) and how to release it.
func mapFile(path string) (data []byte, fi os.FileInfo, unmap func(), err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("mapping %s: %w", path, err)
	}
	defer f.Close()
	fi, err = f.Stat()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("mapping %s: %w", path, err)
	}
	if fi.Size() <= 0 || fi.Size() != int64(int(fi.Size())) {
		return nil, nil, nil, fmt.Errorf("mapping %s: size %d", path, fi.Size())
	}
	data, err = syscall.Mmap(int(f.Fd()), 0, int(fi.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("mapping %s: %w", path, err)
	}
	return data, fi, func() { syscall.Munmap(data) }, nil
}
