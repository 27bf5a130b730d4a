//go:build !mpi

package mpi_test

import (
	"errors"
	"testing"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/collective/mpi"
)

func TestNotBuilt(t *testing.T) {
	if mpi.Built {
		t.Fatal("Built is true without the mpi tag")
	}
	w, err := mpi.World()
	if w != nil || !errors.Is(err, collective.ErrNotBuilt) {
		t.Fatalf("World() = %v, %v; want an error wrapping ErrNotBuilt", w, err)
	}
	if err := mpi.Init(); !errors.Is(err, collective.ErrNotBuilt) {
		t.Fatalf("Init() = %v", err)
	}
	if err := mpi.Finalize(); err != nil {
		t.Fatalf("Finalize() = %v", err)
	}
}
