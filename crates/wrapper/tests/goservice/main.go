// goservice: the shape of a service `winddown run` is for — a Go HTTP server that, on
// os.Interrupt (Ctrl+C; on Windows the console's CTRL_C_EVENT) or SIGTERM, stops with
// http.Server.Shutdown (in-flight requests finish) and then writes, flushes and fsyncs the id of
// every request it answered. The wrapper's tests load it, stop it through the wrapper, and check
// that every request that got an answer is in the file.
//
//	goservice -addr 127.0.0.1:8080 -out answered.txt
//
// GET /req?id=N answers "ok N" after -delay (or after ms=M milliseconds, for a request still in
// flight when the stop comes); the id is recorded before the answer is written.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to serve on")
	out := flag.String("out", "answered.txt", "file of the ids answered, written at the stop")
	delay := flag.Duration("delay", 5*time.Millisecond, "time each request takes")
	grace := flag.Duration("grace", 10*time.Second, "longest Shutdown waits for in-flight requests")
	flag.Parse()

	var mu sync.Mutex
	var answered []string
	mux := http.NewServeMux()
	mux.HandleFunc("/req", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		took := *delay
		if ms, err := strconv.Atoi(r.URL.Query().Get("ms")); err == nil {
			took = time.Duration(ms) * time.Millisecond
		}
		time.Sleep(took)
		mu.Lock()
		answered = append(answered, id)
		mu.Unlock()
		fmt.Fprintf(w, "ok %s\n", id)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	srv := &http.Server{Addr: *addr, Handler: mux}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe() }()
	log.Printf("goservice serving on %s", *addr)

	select {
	case s := <-stop:
		log.Printf("goservice got %v: shutting down", s)
	case err := <-served:
		log.Fatalf("goservice: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Printf("goservice: shutdown: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	f, err := os.Create(*out)
	if err != nil {
		log.Fatalf("goservice: %v", err)
	}
	w := bufio.NewWriter(f)
	for _, id := range answered {
		fmt.Fprintln(w, id)
	}
	if err := w.Flush(); err != nil {
		log.Fatalf("goservice: %v", err)
	}
	if err := f.Sync(); err != nil {
		log.Fatalf("goservice: %v", err)
	}
	f.Close()
	log.Printf("goservice: %d answered requests written to %s", len(answered), *out)
}
