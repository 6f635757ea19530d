// Command ttrpcpeer is a tiny Go ttrpc peer used by the Java test suite to
// prove wire interoperability of the Java ttrpc implementation.
//
// It is built offline against the Debian-packaged github.com/containerd/ttrpc
// (bookworm: 1.1.1, gogo/protobuf codec, unary calls only: no streaming) by
// build.sh in this directory. GOPATH mode, no Go modules.
//
// Usage:
//
//	ttrpcpeer server <unix-socket-path>   serve kuasar.interop.v1.Echo; prints "ready"
//	ttrpcpeer client <unix-socket-path>   run the interop checks against a server
//
// Service kuasar.interop.v1.Echo, every request and response message is
// google.protobuf.StringValue (field 1, string value):
//
//	Echo      returns the request value
//	Sleep     value = milliseconds; returns "slept", or the ctx error
//	          (DEADLINE_EXCEEDED / CANCELED) if the request deadline expires first
//	Fail      returns status NOT_FOUND "no such thing: <value>"
//	Metadata  returns the request metadata values of key "x-test", comma-joined
//	Deadline  returns "none" if the request has no deadline (timeout_nano == 0), else "set"
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const serviceName = "kuasar.interop.v1.Echo"

func main() {
	if len(os.Args) != 3 {
		usage()
	}
	switch os.Args[1] {
	case "server":
		if err := runServer(os.Args[2]); err != nil {
			fmt.Fprintf(os.Stderr, "ttrpcpeer server: %v\n", err)
			os.Exit(1)
		}
	case "client":
		os.Exit(runClient(os.Args[2]))
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: ttrpcpeer server|client <unix-socket-path>")
	os.Exit(2)
}

// ---------------------------------------------------------------- server

// unary adapts a StringValue -> StringValue handler to a ttrpc.Method.
func unary(h func(ctx context.Context, in string) (string, error)) ttrpc.Method {
	return func(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
		var req types.StringValue
		if err := unmarshal(&req); err != nil {
			return nil, err
		}
		out, err := h(ctx, req.Value)
		if err != nil {
			return nil, err
		}
		return &types.StringValue{Value: out}, nil
	}
}

func methods() map[string]ttrpc.Method {
	return map[string]ttrpc.Method{
		"Echo": unary(func(ctx context.Context, in string) (string, error) {
			return in, nil
		}),
		"Sleep": unary(func(ctx context.Context, in string) (string, error) {
			ms, err := strconv.ParseInt(strings.TrimSpace(in), 10, 64)
			if err != nil || ms < 0 {
				return "", status.Errorf(codes.InvalidArgument, "bad milliseconds: %q", in)
			}
			t := time.NewTimer(time.Duration(ms) * time.Millisecond)
			defer t.Stop()
			select {
			case <-t.C:
				return "slept", nil
			case <-ctx.Done():
				// context.DeadlineExceeded / context.Canceled: ttrpc maps these to
				// DEADLINE_EXCEEDED / CANCELED with message "context deadline exceeded".
				return "", ctx.Err()
			}
		}),
		"Fail": unary(func(ctx context.Context, in string) (string, error) {
			return "", status.Errorf(codes.NotFound, "no such thing: %s", in)
		}),
		"Metadata": unary(func(ctx context.Context, in string) (string, error) {
			md, ok := ttrpc.GetMetadata(ctx)
			if !ok {
				return "", nil
			}
			vals, _ := md.Get("x-test")
			return strings.Join(vals, ","), nil
		}),
		"Deadline": unary(func(ctx context.Context, in string) (string, error) {
			if _, ok := ctx.Deadline(); ok {
				return "set", nil
			}
			return "none", nil
		}),
	}
}

func runServer(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("unlink %s: %w", path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		return err
	}
	srv.Register(serviceName, methods())

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(context.Background(), l) }()
	fmt.Println("ready")

	select {
	case s := <-sigs:
		fmt.Fprintf(os.Stderr, "ttrpcpeer server: %v, shutting down\n", s)
		srv.Close()
		os.Remove(path)
		return nil
	case err := <-serveErr:
		os.Remove(path)
		if err == ttrpc.ErrServerClosed {
			return nil
		}
		return err
	}
}

// ---------------------------------------------------------------- client

type checker struct{ failed int }

func (c *checker) report(name string, err error) {
	if err != nil {
		c.failed++
		fmt.Printf("FAIL %s: %v\n", name, err)
	} else {
		fmt.Printf("ok %s\n", name)
	}
}

// callTimeout bounds every call that is not itself about deadlines, so a broken
// server cannot hang the client.
const callTimeout = 5 * time.Second

func call(ctx context.Context, cl *ttrpc.Client, method, in string) (string, error) {
	var resp types.StringValue
	err := cl.Call(ctx, serviceName, method, &types.StringValue{Value: in}, &resp)
	return resp.Value, err
}

// callNoDeadline calls without a ctx deadline (so timeout_nano = 0 on the wire)
// but still gives up after callTimeout.
func callNoDeadline(cl *ttrpc.Client, method, in string, md ttrpc.MD) (string, error) {
	type result struct {
		v   string
		err error
	}
	ctx := context.Background()
	if md != nil {
		ctx = ttrpc.WithMetadata(ctx, md)
	}
	ch := make(chan result, 1)
	go func() {
		v, err := call(ctx, cl, method, in)
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-time.After(callTimeout):
		return "", fmt.Errorf("no answer after %v", callTimeout)
	}
}

func expectValue(got string, err error, want string) error {
	if err != nil {
		return fmt.Errorf("error %v", err)
	}
	if got != want {
		return fmt.Errorf("got %q, want %q", abbrev(got), abbrev(want))
	}
	return nil
}

func expectStatus(err error, code codes.Code, msg string) error {
	if err == nil {
		return fmt.Errorf("no error, want %v", code)
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("non-status error %T: %v, want status %v", err, err, code)
	}
	if st.Code() != code {
		return fmt.Errorf("code %v (%q), want %v", st.Code(), st.Message(), code)
	}
	if msg != "" && st.Message() != msg {
		return fmt.Errorf("message %q, want %q", st.Message(), msg)
	}
	return nil
}

func abbrev(s string) string {
	if len(s) > 64 {
		return fmt.Sprintf("%s...(%d bytes)", s[:64], len(s))
	}
	return s
}

// overrideTimeout is a client interceptor that replaces the request's
// timeout_nano, so the server-side deadline can be tested independently of the
// client-side ctx deadline.
func overrideTimeout(d time.Duration) ttrpc.UnaryClientInterceptor {
	return func(ctx context.Context, req *ttrpc.Request, resp *ttrpc.Response, _ *ttrpc.UnaryClientInfo, inv ttrpc.Invoker) error {
		req.TimeoutNano = d.Nanoseconds()
		return inv(ctx, req, resp)
	}
}

func dial(path string, opts ...ttrpc.ClientOpts) (*ttrpc.Client, error) {
	conn, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return ttrpc.NewClient(conn, opts...), nil
}

func runClient(path string) int {
	cl, err := dial(path)
	if err != nil {
		fmt.Printf("FAIL connect: %v\n", err)
		return 1
	}
	defer cl.Close()
	c := &checker{}

	// echo
	{
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		v, err := call(ctx, cl, "Echo", "hello")
		cancel()
		c.report("echo", expectValue(v, err, "hello"))
	}

	// fail: NOT_FOUND with the exact message
	{
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		_, err := call(ctx, cl, "Fail", "x")
		cancel()
		c.report("fail", expectStatus(err, codes.NotFound, "no such thing: x"))
	}

	// metadata: x-test=abc
	{
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		ctx = ttrpc.WithMetadata(ctx, ttrpc.MD{"x-test": {"abc"}})
		v, err := call(ctx, cl, "Metadata", "")
		cancel()
		c.report("metadata", expectValue(v, err, "abc"))
	}

	// metadata with two values for the key: sent as two KeyValue entries, in order
	{
		v, err := callNoDeadline(cl, "Metadata", "", ttrpc.MD{"x-test": {"a", "b"}})
		c.report("metadata-multi", expectValue(v, err, "a,b"))
	}

	// sleep: a short sleep completes
	{
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		v, err := call(ctx, cl, "Sleep", "50")
		cancel()
		c.report("sleep", expectValue(v, err, "slept"))
	}

	// sleep-deadline: Sleep(2000) with a 200ms client timeout -> DEADLINE_EXCEEDED within ~1s.
	// The Go ttrpc 1.1.1 client usually gives up locally first (context.DeadlineExceeded,
	// not a status); a server status DEADLINE_EXCEEDED is accepted too.
	{
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_, err := call(ctx, cl, "Sleep", "2000")
		cancel()
		el := time.Since(start)
		var cerr error
		switch {
		case err == nil:
			cerr = fmt.Errorf("no error after %v", el)
		case errors.Is(err, context.DeadlineExceeded):
		case status.Code(err) == codes.DeadlineExceeded:
		default:
			cerr = fmt.Errorf("error %v (code %v), want DEADLINE_EXCEEDED", err, status.Code(err))
		}
		if cerr == nil && el > time.Second {
			cerr = fmt.Errorf("took %v, want < 1s", el)
		}
		c.report("sleep-deadline", cerr)
	}

	// sleep-server-deadline: the request carries timeout_nano=200ms but the client
	// waits up to 5s, so the answer must be the server's status DEADLINE_EXCEEDED.
	{
		cl2, err := dial(path, ttrpc.WithUnaryClientInterceptor(overrideTimeout(200*time.Millisecond)))
		if err != nil {
			c.report("sleep-server-deadline", err)
		} else {
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := call(ctx, cl2, "Sleep", "2000")
			cancel()
			el := time.Since(start)
			cerr := expectStatus(err, codes.DeadlineExceeded, "")
			if cerr == nil && el > time.Second {
				cerr = fmt.Errorf("took %v, want < 1s", el)
			}
			c.report("sleep-server-deadline", cerr)
			cl2.Close()
		}
	}

	// deadline: timeout_nano 0 -> "none", non-zero -> "set"
	{
		v, err := callNoDeadline(cl, "Deadline", "", nil)
		c.report("deadline-none", expectValue(v, err, "none"))
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		v, err = call(ctx, cl, "Deadline", "")
		cancel()
		c.report("deadline-set", expectValue(v, err, "set"))
	}

	// unknown method -> UNIMPLEMENTED
	{
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		_, err := call(ctx, cl, "NoSuchMethod", "")
		cancel()
		c.report("unknown-method", expectStatus(err, codes.Unimplemented, ""))
	}

	// concurrent: 50 Echo calls in flight on one connection
	{
		const n = 50
		var wg sync.WaitGroup
		errs := make(chan error, n)
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				want := fmt.Sprintf("concurrent-%d", i)
				v, err := call(ctx, cl, "Echo", want)
				if e := expectValue(v, err, want); e != nil {
					errs <- fmt.Errorf("call %d: %v", i, e)
				}
			}(i)
		}
		wg.Wait()
		cancel()
		close(errs)
		var first error
		nerr := 0
		for e := range errs {
			if first == nil {
				first = e
			}
			nerr++
		}
		if first != nil {
			c.report("concurrent", fmt.Errorf("%d of %d failed, first: %v", nerr, n, first))
		} else {
			c.report("concurrent", nil)
		}
	}

	// large: a 1 MiB value
	{
		b := make([]byte, 1<<20)
		for i := range b {
			b[i] = 'a' + byte(i%26)
		}
		want := string(b)
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		v, err := call(ctx, cl, "Echo", want)
		cancel()
		c.report("large", expectValue(v, err, want))
	}

	if c.failed > 0 {
		return 1
	}
	return 0
}
