// Command bench measures what the segment handler costs a Caddy that serves
// a docs site. It builds cmd/caddy, starts two Caddy processes on loopback
// that serve the same copy of sample/site, one with the segment handler and
// one without, and drives them in turn with wrk. The Caddy with the handler
// sends its events to a Segment-compatible recorder in this process, and the
// command checks that every page view arrived there exactly once.
//
// Run it from the repository root:
//
//	go run ./tests/bench                          # 3 runs of 10 s per scenario, then scenario 5
//	go run ./tests/bench -smoke                   # 1 run of 2 s per scenario, for CI
//	go run ./tests/bench -scenarios 1,4 -runs 5 -out results.md
//
// Scenarios:
//
//  1. page views of a returning reader (ajs_anonymous_id cookie sent)
//  2. page views of new readers (no cookie, so each response sets one)
//  3. assets only (CSS, JavaScript, images)
//  4. one page view per ten assets
//  5. scenario 1 while the Segment endpoint accepts connections and never
//     responds, followed by a timed shutdown of the Caddy with the handler
//
// It exits with status 1 when an invariant breaks: a Caddy process died, wrk
// failed or got error responses, or the events received differ from the page
// views served in scenarios 1 to 4. Throughput and latency ratios never fail
// the run, because they vary with the load on the machine.
//
// It needs Linux (memory and CPU figures come from /proc) and wrk, which it
// installs with apt-get when it is missing.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the command-line settings.
type options struct {
	duration     time.Duration
	runs         int
	connections  int
	threads      int
	scenarios    []int
	hangDuration time.Duration
	warmup       time.Duration
	smoke        bool
	out          string
	keep         bool
}

// Settings that -smoke uses for the flags that are not given explicitly.
const (
	smokeRuns         = 1
	smokeDuration     = 2 * time.Second
	smokeHangDuration = 3 * time.Second
	smokeWarmup       = 0
)

func parseOptions(args []string, output io.Writer) (options, error) {
	var opts options
	var scenarioList string

	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.DurationVar(&opts.duration, "duration", 10*time.Second, "length of each measured wrk run in scenarios 1 to 4, in whole seconds")
	fs.IntVar(&opts.runs, "runs", 3, "number of measured runs per scenario and server")
	fs.IntVar(&opts.connections, "connections", 32, "number of open HTTP connections wrk keeps")
	fs.IntVar(&opts.threads, "threads", 2, "number of wrk threads")
	fs.StringVar(&scenarioList, "scenarios", "1,2,3,4,5", "comma-separated scenarios to run (1 returning reader, 2 new readers, 3 assets, 4 one page per ten assets, 5 returning reader while Segment hangs)")
	fs.DurationVar(&opts.hangDuration, "hang-duration", 60*time.Second, "length of each wrk run of scenario 5, during which the recorder never responds, in whole seconds")
	fs.DurationVar(&opts.warmup, "warmup", time.Second, "length of an unmeasured wrk run against each server before the measured runs of scenarios 1 to 4; 0 skips it")
	fs.BoolVar(&opts.smoke, "smoke", false, fmt.Sprintf("short run for CI: unless given explicitly, -runs %d -duration %s -hang-duration %s -warmup 0", smokeRuns, smokeDuration, smokeHangDuration))
	fs.StringVar(&opts.out, "out", "", "file to write the results to: Markdown if the name ends in .md, JSON otherwise")
	fs.BoolVar(&opts.keep, "keep", false, "keep the working directory (Caddyfiles, Caddy logs, wrk scripts); it is also kept when a run fails")

	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected argument %q: bench takes only flags", fs.Arg(0))
	}

	if opts.smoke {
		explicit := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
		if !explicit["runs"] {
			opts.runs = smokeRuns
		}
		if !explicit["duration"] {
			opts.duration = smokeDuration
		}
		if !explicit["hang-duration"] {
			opts.hangDuration = smokeHangDuration
		}
		if !explicit["warmup"] {
			opts.warmup = smokeWarmup
		}
	}

	scenarios, err := parseScenarioList(scenarioList)
	if err != nil {
		return options{}, err
	}
	opts.scenarios = scenarios

	if err := opts.check(); err != nil {
		return options{}, err
	}
	return opts, nil
}

// parseScenarioList reads "1,2,5" into sorted, unique scenario numbers.
// Scenario 5 stops the Caddy with the handler, so it always runs last.
func parseScenarioList(list string) ([]int, error) {
	var ids []int
	for _, field := range strings.Split(list, ",") {
		field = strings.TrimSpace(field)
		if field == "" {
			continue
		}
		id, err := strconv.Atoi(field)
		if err != nil || id < 1 || id > len(scenarioNames) {
			return nil, fmt.Errorf("-scenarios: %q is not a scenario: use numbers from 1 to %d, such as 1,2,5", field, len(scenarioNames))
		}
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil, errors.New("-scenarios is empty: give at least one scenario, such as 1")
	}
	slices.Sort(ids)
	return ids, nil
}

func (o options) check() error {
	if o.runs < 1 {
		return fmt.Errorf("-runs %d is out of range: use 1 or more", o.runs)
	}
	if o.threads < 1 {
		return fmt.Errorf("-threads %d is out of range: use 1 or more", o.threads)
	}
	if o.connections < o.threads {
		return fmt.Errorf("-connections %d is less than -threads %d: wrk needs at least one connection per thread", o.connections, o.threads)
	}
	// wrk reads its -d flag in whole seconds.
	for _, d := range []struct {
		name  string
		value time.Duration
		zero  bool
	}{
		{"-duration", o.duration, false},
		{"-hang-duration", o.hangDuration, false},
		{"-warmup", o.warmup, true},
	} {
		if d.value == 0 && d.zero {
			continue
		}
		if d.value < time.Second || d.value%time.Second != 0 {
			return fmt.Errorf("%s %s is not a whole number of seconds of at least 1s: wrk takes durations in seconds, use for example 10s", d.name, d.value)
		}
	}
	return nil
}

func main() {
	opts, err := parseOptions(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}

	// Interrupts end the wrk runs through ctx; run then stops every process
	// it started before it returns.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, opts)
	stop()
	os.Exit(code)
}

// run sets up the servers, runs the scenarios and prints the results. It
// returns the exit status.
func run(ctx context.Context, opts options) int {
	h, err := newHarness(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: setup failed:", err)
		return 1
	}
	// The working directory holds the Caddy logs, so it is kept when a run
	// fails, but not when it is interrupted.
	failed := true
	defer func() { h.close(opts.keep || (failed && ctx.Err() == nil)) }()

	rep, err := h.runAll(ctx)
	if rep != nil {
		fmt.Println()
		fmt.Print(rep.markdown())
		if opts.out != "" {
			if writeErr := rep.write(opts.out); writeErr != nil {
				fmt.Fprintln(os.Stderr, "bench:", writeErr)
				return 1
			}
			fmt.Fprintf(os.Stderr, "bench: results written to %s\n", opts.out)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	if len(rep.Violations) > 0 {
		fmt.Fprintf(os.Stderr, "bench: %d invariant(s) broken:\n", len(rep.Violations))
		for _, v := range rep.Violations {
			fmt.Fprintln(os.Stderr, "  -", v)
		}
		return 1
	}
	failed = false
	return 0
}
