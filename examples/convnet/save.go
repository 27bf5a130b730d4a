package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/examples/internal/cnn"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"gorgonia.org/tensor"
)

// savedName is the file, in -out, that holds the trained model with BN at
// the first learning rate.
const savedName = "convnet-bn.safetensors"

// stateDict lists the model's tensors under PyTorch-style keys: conv1.weight
// (8,1,3,3) and conv2.weight (16,8,3,3) as PyTorch's Conv2d; bn1.* and bn2.*
// as BatchNorm2d (weight, bias, running_mean, running_var,
// num_batches_tracked); fc.weight (784,10) in Gorgonia's x·W layout (the
// transpose of PyTorch's Linear weight) and fc.bias (10).
func stateDict(w *cnn.Weights, bns []*bn.Layer) (*bn.StateDict, error) {
	sd := bn.NewStateDict()
	for _, err := range []error{
		sd.AddTensor("conv1.weight", w.W1),
		sd.AddLayer("bn1", bns[0]),
		sd.AddTensor("conv2.weight", w.W2),
		sd.AddLayer("bn2", bns[1]),
		sd.AddTensor("fc.weight", w.WF),
		// A (10) view of the (1,10) bias: loading writes into w.BF.
		sd.AddTensor("fc.bias", tensor.New(tensor.WithShape(mnist.Classes), tensor.WithBacking(w.BF.Data()))),
	} {
		if err != nil {
			return nil, err
		}
	}
	return sd, nil
}

// saveModel writes the model of the first run with BN to dir/savedName.
func saveModel(dir string, results []*runResult, w io.Writer) error {
	for _, r := range results {
		if !r.cfg.withBN || r.diverged {
			continue
		}
		sd, err := stateDict(r.model.w, r.model.train.BNs)
		if err != nil {
			return err
		}
		path := filepath.Join(dir, savedName)
		if err := sd.WriteFile(path); err != nil {
			return err
		}
		fmt.Fprintf(w, "saved %s (%s) to %s; evaluate it with -load %s\n", r.cfg.name, r.cfg.dtype, path, path)
		return nil
	}
	return nil
}

// evalSaved loads a model saved by saveModel and evaluates it on the test
// set with its running statistics (bn.Eval), then with BN folded into the
// convolutions (cnn.NewFolded), and prints both accuracies and times.
func evalSaved(ctx context.Context, o *options, out io.Writer) error {
	_, testAll, err := mnist.Load(o.data)
	if err != nil {
		return err
	}
	test := testAll.Head(o.testSubset)
	batch := min(o.evalBatch, test.Len())
	w, err := cnn.NewWeights(o.dt, o.seed, cnn.ClassifierStd) // overwritten by the file
	if err != nil {
		return err
	}
	net, err := cnn.New(w, cnn.Config{Batch: batch})
	if err != nil {
		return err
	}
	defer net.Close()
	sd, err := stateDict(w, net.BNs)
	if err != nil {
		return err
	}
	if err := sd.ReadFile(o.load); err != nil {
		return fmt.Errorf("-load %s: %w", o.load, err)
	}
	if err := net.SetMode(bn.Eval); err != nil {
		return err
	}
	t0 := time.Now()
	acc, err := cnn.Accuracy(ctx, net, test, nil)
	if err != nil {
		return err
	}
	d := time.Since(t0)
	folded, err := cnn.NewFolded(w, net.BNs, batch)
	if err != nil {
		return err
	}
	defer folded.Close()
	t0 = time.Now()
	facc, err := cnn.Accuracy(ctx, folded, test, nil)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s: test accuracy %.2f%% with BN (running statistics, %v), %.2f%% with BN folded into the convolutions (%v); %d images in batches of %d\n",
		o.load, 100*acc, d.Round(time.Millisecond), 100*facc, time.Since(t0).Round(time.Millisecond), test.Len()/batch*batch, batch)
	return nil
}

// loadFlag is the help of -load.
const loadFlag = "evaluate the model saved in this safetensors file (" + savedName + " of a previous run; float32 and float64 files load into either -dtype) instead of training"
