// Package mnisttest loads MNIST for the examples' tests.
package mnisttest

import (
	"errors"
	"testing"

	"github.com/gorgonia-bn/bn/examples/internal/mnist"
)

// Load returns the first nTrain training and the first nTest test images
// of MNIST (all of them for 0, as mnist.Set.Head). It skips the test when
// the MNIST files cannot be found and fails it on any other error.
func Load(t testing.TB, nTrain, nTest int) (train, test *mnist.Set) {
	t.Helper()
	tr, te, err := mnist.Load("")
	if errors.Is(err, mnist.ErrNotFound) {
		t.Skipf("MNIST not available: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return tr.Head(nTrain), te.Head(nTest)
}
