//go:build !unix

package model

import "errors"

// mapFile is unavailable here: models load the plain way.
func mapFile(string) ([]byte, func(), error) {
	return nil, nil, errors.New("no memory mapping on this platform")
}
