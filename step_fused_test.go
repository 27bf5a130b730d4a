package bn

// The fused variant of BenchmarkStep (step_bench_test.go), in its own file
// so that benchdata/step.sh can build step_bench_test.go in trees without
// Layer.ApplyReLU.
func init() { stepFused = (*Layer).ApplyReLU }
