// Package bn is batch normalization for Gorgonia: custom ops with symbolic
// differentiation for plain, ghost, synchronized (SyncBN), domain-specific
// (package domainbn) and precise (population-statistics) batch norm, on
// inputs of shape (N,C), (N,C,L), (N,C,H,W) and (N,C,D,H,W), float32 and
// float64, NCHW layout.
//
// Every variant is one pipeline: per-channel moments (count, mean, M2) of
// some set of samples, merged with Chan's rule in float64, then
// y = (x−μ)/√(σ²+ε)·γ + β. The variants differ only in the set: the
// mini-batch (Train, EvalBatchStats), groups of the mini-batch
// (WithGhostBatch), the union of the mini-batches of every rank
// (WithCommunicator), the samples of one domain (domainbn), many batches of
// a frozen model (Precise), or the running statistics (Eval, Frozen).
//
// Usage:
//
//	g := gorgonia.NewGraph()
//	x := gorgonia.NewTensor(g, tensor.Float32, 4, gorgonia.WithShape(32, 64, 28, 28), gorgonia.WithName("x"))
//	layer, err := bn.New(g, 64, tensor.Float32)            // γ = 1, β = 0, ε = 1e-5, momentum 0.1
//	y, err := layer.Apply(x)                               // y is a graph node
//	…                                                      // loss, gorgonia.Grad(loss, append(params, layer.Learnables()...)...)
//	layer.SetMode(bn.Eval)                                 // use the running statistics
//
// Conventions follow PyTorch: momentum is the weight of the new batch in
// r ← (1−m)·r + m·batch, the running variance is unbiased, the normalizing
// variance biased; a training batch with one value per channel is an error
// (ErrTooFewValues); NaN or Inf in x propagate to y and, in training, to the
// running statistics of that channel, as in PyTorch.
//
// The CPU kernels run AVX-512 or AVX2 assembly on amd64 CPUs that have it
// and portable Go elsewhere (or with the purego build tag); the
// environment variable BN_KERNELS=avx2 or BN_KERNELS=go caps the choice.
// Results do not depend on the number of threads.
//
// After training: StateDict saves and loads a model's layers and weights
// in safetensors under PyTorch's keys (PyTorch reads and writes the same
// files); Layer.In puts a layer in another graph (another batch size, a
// forward-only graph) sharing its parameters and statistics; FoldWeights,
// FoldedConv2d and FoldedLinear fold an Eval layer into the conv or linear
// layer before it; Sync and Unsync convert existing layers to SyncBN and
// back.
//
// Errors are wrapped sentinels (ErrShape, ErrDtype, ErrTooFewValues,
// ErrOption, ErrState, ErrSync, …). Gorgonia's machines hide wrapped
// errors; use errors.Is(bn.Cause(err), bn.ErrTooFewValues) on the error of
// a machine's RunAll.
package bn
