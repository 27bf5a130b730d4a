// Command scaleplot draws the figure and prints the table of the "Scale"
// section of bn's README from the output of BenchmarkScaleExchange (go test
// -bench ScaleExchange in the module root): per layer and step, the bytes
// the busiest rank receives and the wall time of one exchange on every
// in-process rank, for the all-gather exchange and the Moments all-reduce,
// over the number of ranks P.
//
//	go run ./examples/internal/scaleplot -in benchdata/scale-exchange.txt -out benchdata/scale-exchange.png
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"os"
	"regexp"
	"slices"
	"strconv"

	"github.com/gorgonia-bn/bn/examples/internal/plotutil"
	"gonum.org/v1/plot/vg"
)

// key is one benchmark: ranks, channels, exchange.
type key struct {
	P, C int
	way  string
}

// result holds the runs of one benchmark.
type result struct {
	ns   []float64
	recv float64
}

var line = regexp.MustCompile(`^BenchmarkScaleExchange/P=(\d+)/C=(\d+)/(\w+)-\d+\s+\d+\s+([\d.]+) ns/op(.*)$`)
var recvMetric = regexp.MustCompile(`([\d.e+]+) recvB/rank`)

func main() {
	in := flag.String("in", "benchdata/scale-exchange.txt", "go test -bench output")
	out := flag.String("out", "benchdata/scale-exchange.png", "PNG to write")
	flag.Parse()
	res, err := parse(*in)
	if err != nil {
		log.Fatal(err)
	}
	var Ps, Cs []int
	for k := range res {
		if !slices.Contains(Ps, k.P) {
			Ps = append(Ps, k.P)
		}
		if !slices.Contains(Cs, k.C) {
			Cs = append(Cs, k.C)
		}
	}
	slices.Sort(Ps)
	slices.Sort(Cs)
	bytes := plotutil.Panel{Title: "bytes received per rank, layer and step", XLabel: "ranks P", YLabel: "bytes (busiest rank, model)", LogX: true, LogY: true, YMax: plotutil.Float(1e10)}
	lat := plotutil.Panel{Title: "one exchange, P in-process ranks (2 shared cores)", XLabel: "ranks P", YLabel: "ms per layer (median)", LogX: true, LogY: true, NoLegend: true}
	for i, C := range Cs {
		for _, way := range []string{"gather", "moments"} {
			name := fmt.Sprintf("C=%d all-gather", C)
			if way == "moments" {
				name = fmt.Sprintf("C=%d moments", C)
			}
			s := plotutil.Series{Name: name, Color: i, Dashed: way == "gather", Points: true}
			t := s
			for _, P := range Ps {
				r, ok := res[key{P, C, way}]
				if !ok {
					continue
				}
				s.X, s.Y = append(s.X, float64(P)), append(s.Y, r.recv)
				t.X, t.Y = append(t.X, float64(P)), append(t.Y, median(r.ns)/1e6)
			}
			bytes.Series = append(bytes.Series, s)
			lat.Series = append(lat.Series, t)
		}
	}
	if err := plotutil.SavePNG(*out, 24*vg.Centimeter, 10*vg.Centimeter, bytes, lat); err != nil {
		log.Fatal(err)
	}
	// The README table: median ms and bytes per rank, both exchanges.
	fmt.Println("| P | C | all-gather: ms | moments: ms | all-gather: bytes/rank | moments: bytes/rank |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|")
	for _, P := range Ps {
		for _, C := range Cs {
			g, gok := res[key{P, C, "gather"}]
			m, mok := res[key{P, C, "moments"}]
			if !mok {
				continue
			}
			gms, gb := "—", "—"
			if gok {
				gms, gb = fmt.Sprintf("%.3g", median(g.ns)/1e6), fmt.Sprintf("%.0f", g.recv)
			}
			fmt.Printf("| %d | %d | %s | %.3g | %s | %.0f |\n", P, C, gms, median(m.ns)/1e6, gb, m.recv)
		}
	}
}

func parse(path string) (map[key]*result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	res := map[key]*result{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		P, _ := strconv.Atoi(m[1])
		C, _ := strconv.Atoi(m[2])
		ns, _ := strconv.ParseFloat(m[4], 64)
		k := key{P, C, m[3]}
		r := res[k]
		if r == nil {
			r = &result{}
			res[k] = r
		}
		r.ns = append(r.ns, ns)
		if rm := recvMetric.FindStringSubmatch(m[5]); rm != nil {
			r.recv, _ = strconv.ParseFloat(rm[1], 64)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(res) == 0 {
		return nil, fmt.Errorf("%s: no BenchmarkScaleExchange lines", path)
	}
	return res, nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
