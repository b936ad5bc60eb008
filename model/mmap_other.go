//go:build !unix

package model

import (
	"errors"
	"os"
)

// mapFile is unavailable here: models load the plain way.
func mapFile(string) ([]byte, os.FileInfo, func(), error) {
	return nil, nil, nil, errors.New("no memory mapping on this platform")
}
