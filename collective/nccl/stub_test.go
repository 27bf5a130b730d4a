//go:build !cuda

package nccl

import (
	"context"
	"errors"
	"testing"

	"github.com/gorgonia-bn/bn/collective"
)

func TestNotBuilt(t *testing.T) {
	ctx := context.Background()
	boot, err := collective.NewInProcess(1)
	if err != nil {
		t.Fatal(err)
	}
	defer boot[0].Close()
	errs := []error{Available()}
	_, err = Version()
	errs = append(errs, err)
	_, err = NewUniqueID()
	errs = append(errs, err)
	_, err = NewRank(UniqueID{}, 1, 0, 0)
	errs = append(errs, err)
	_, err = New(ctx, boot[0], 0)
	errs = append(errs, err)
	_, err = NewFromFile(ctx, t.TempDir()+"/id", 1, 0, 0)
	errs = append(errs, err)
	_, err = NewInProcess([]int{0})
	errs = append(errs, err)
	var c Comm
	errs = append(errs, c.AllReduce(ctx, collective.Float32s(nil), collective.Sum), c.Barrier(ctx))
	for i, err := range errs {
		if !errors.Is(err, collective.ErrNotBuilt) {
			t.Errorf("call %d: %v, want ErrNotBuilt", i, err)
		}
	}
}
