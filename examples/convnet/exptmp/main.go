package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand"
	"strings"
	"time"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/examples/internal/cnn"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"gorgonia.org/tensor"
)

func main() {
	act := flag.String("act", "sigmoid", "")
	depths := flag.String("depths", "0,2,4", "")
	lr := flag.Float64("lr", 0.1, "")
	steps := flag.Int("steps", 300, "")
	every := flag.Int("every", 25, "")
	seeds := flag.Int("seeds", 1, "")
	ntest := flag.Int("test", 1000, "")
	flag.Parse()
	a, _ := cnn.ParseActivation(*act)
	trainAll, testAll, err := mnist.Load("")
	if err != nil {
		panic(err)
	}
	tr, te := trainAll.Head(10000), testAll.Head(*ntest)
	for _, ds := range strings.Split(*depths, ",") {
		var d int
		fmt.Sscan(ds, &d)
		for seed := int64(1); seed <= int64(*seeds); seed++ {
			for _, nobn := range []bool{false, true} {
				t0 := time.Now()
				w, _ := cnn.NewDeepWeights(tensor.Float32, seed, cnn.ClassifierStd, d)
				n, err := cnn.New(w, cnn.Config{Batch: 64, NoBN: nobn, Train: true, Act: a, Depth: d})
				if err != nil {
					panic(err)
				}
				en, _ := cnn.New(w, cnn.Config{Batch: 500, NoBN: nobn, Act: a, Depth: d})
				sgd, _ := cnn.NewSGD(n, *lr)
				rng := rand.New(rand.NewSource(seed))
				var accs []string
				step := 0
				for step < *steps {
					bs, _ := mnist.Batches(mnist.Shuffle(tr.Len(), rng), 64, true)
					for _, idx := range bs {
						if step >= *steps {
							break
						}
						if _, err := sgd.Step(tr, idx); err != nil {
							panic(err)
						}
						step++
						if step%*every == 0 {
							if !nobn {
								en.CopyBN(n)
								en.SetMode(bn.Eval)
							}
							acc, _ := cnn.Accuracy(context.Background(), en, te, nil)
							accs = append(accs, fmt.Sprintf("%.0f", 100*acc))
						}
					}
				}
				fmt.Printf("%s d%d seed%d nobn=%v %v: %s\n", *act, d, seed, nobn, time.Since(t0).Round(time.Second), strings.Join(accs, " "))
			}
		}
	}
}
