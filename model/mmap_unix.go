//go:build unix

package model

import (
	"fmt"
	"os"
	"syscall"
)

// mapFile maps the file at path read-only; unmap releases it.
func mapFile(path string) (data []byte, unmap func(), err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if st.Size() <= 0 || st.Size() != int64(int(st.Size())) {
		return nil, nil, fmt.Errorf("mapping %s: size %d", path, st.Size())
	}
	data, err = syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("mapping %s: %w", path, err)
	}
	return data, func() { syscall.Munmap(data) }, nil
}
