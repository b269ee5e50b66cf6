package audit

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Stdout is the Config.Path that writes to Config.Stdout.
const Stdout = "-"

// Defaults of Config.
const (
	DefaultMaxSize  = 100 << 20
	DefaultMaxFiles = 5
)

// maxKeptBuf bounds the encoding buffers kept between writes.
const maxKeptBuf = 64 << 10

// Config configures a Log.
type Config struct {
	// Path is the audit file, or Stdout.
	Path string
	// Stdout receives the records when Path is Stdout; os.Stdout when nil.
	Stdout io.Writer
	// MaxSize is the size in bytes past which the file rotates;
	// DefaultMaxSize when zero.
	MaxSize int64
	// MaxFiles is how many rotated files are kept (path.1 .. path.N);
	// DefaultMaxFiles when zero.
	MaxFiles int
	// Metrics, when not nil, receives spiffe_sts_audit_records_total and
	// spiffe_sts_audit_write_failures_total.
	Metrics prometheus.Registerer
}

// Log is an audit sink. It is safe for concurrent use.
type Log struct {
	cfg      Config
	failures prometheus.Counter
	records  prometheus.Counter

	mu   sync.Mutex
	w    io.Writer
	file *os.File // nil for Stdout, or after a failure
	size int64
	err  error // the last write or open error; nil when working
}

// Open opens the sink: it creates or appends to the file (mode 0600).
func Open(cfg Config) (*Log, error) {
	switch {
	case cfg.Path == "":
		return nil, errors.New("audit: path is required")
	case cfg.MaxSize < 0 || cfg.MaxFiles < 0:
		return nil, errors.New("audit: max_size and max_files must not be negative")
	}
	if cfg.MaxSize == 0 {
		cfg.MaxSize = DefaultMaxSize
	}
	if cfg.MaxFiles == 0 {
		cfg.MaxFiles = DefaultMaxFiles
	}
	l := &Log{
		cfg: cfg,
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spiffe_sts_audit_write_failures_total",
			Help: "Audit records that could not be written.",
		}),
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spiffe_sts_audit_records_total",
			Help: "Audit records written.",
		}),
	}
	if cfg.Metrics != nil {
		if err := cfg.Metrics.Register(l.failures); err != nil {
			return nil, fmt.Errorf("audit: metrics: %w", err)
		}
		if err := cfg.Metrics.Register(l.records); err != nil {
			return nil, fmt.Errorf("audit: metrics: %w", err)
		}
	}
	if cfg.Path == Stdout {
		l.w = cfg.Stdout
		if l.w == nil {
			l.w = os.Stdout
		}
		return l, nil
	}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Log) open() error {
	f, err := os.OpenFile(l.cfg.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("audit: %w", err)
	}
	l.file, l.w, l.size = f, f, st.Size()
	return nil
}

// Write appends r as one JSON line. A failure is counted and returned,
// and the next Write or Check reopens the file. The record is encoded
// before the lock is taken, into a pooled buffer, so that concurrent
// requests serialize on the write alone.
func (l *Log) Write(r *Record) error {
	line := lineBufferPool.Get().(*lineBuffer)
	defer line.release()
	var err error
	if timeEncodable(r.Time) {
		line.b = append(r.AppendJSON(line.b[:0]), '\n')
	} else {
		err = errors.New("audit: encode: time outside of the years 0 to 9999 RFC 3339 can write")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil {
		err = l.write(line.b)
	}
	l.err = err
	if err != nil {
		l.failures.Inc()
		return err
	}
	l.records.Inc()
	return nil
}

// lineBuffer holds one encoded record. Buffers are pooled, so encoding a
// record allocates nothing once a buffer has grown to a record's size;
// one that grew past maxKeptBuf for an unusual record is not kept.
type lineBuffer struct{ b []byte }

var lineBufferPool = sync.Pool{New: func() any { return new(lineBuffer) }}

func (lb *lineBuffer) release() {
	if cap(lb.b) > maxKeptBuf {
		return
	}
	lb.b = lb.b[:0]
	lineBufferPool.Put(lb)
}

// write appends line, rotating the file first when it would grow past
// Config.MaxSize; l.mu is held. The Writer does not keep line (io.Writer).
func (l *Log) write(line []byte) error {
	if l.cfg.Path != Stdout {
		if l.file == nil {
			if err := l.open(); err != nil {
				return err
			}
		}
		if l.size > 0 && l.size+int64(len(line)) > l.cfg.MaxSize {
			if err := l.rotate(); err != nil {
				return err
			}
		}
	}
	n, err := l.w.Write(line)
	l.size += int64(n)
	if err != nil {
		l.drop()
		return fmt.Errorf("audit: write: %w", err)
	}
	return nil
}

// rotate renames path.i to path.i+1, dropping the oldest, and path to
// path.1, then opens a new path.
func (l *Log) rotate() error {
	_ = l.file.Close()
	l.file = nil
	p := l.cfg.Path
	_ = os.Remove(p + "." + strconv.Itoa(l.cfg.MaxFiles))
	for i := l.cfg.MaxFiles - 1; i >= 1; i-- {
		if err := os.Rename(p+"."+strconv.Itoa(i), p+"."+strconv.Itoa(i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("audit: rotate: %w", err)
		}
	}
	if err := os.Rename(p, p+".1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("audit: rotate: %w", err)
	}
	return l.open()
}

// drop closes the file after a failed write, so that the next use
// reopens it (the file may have been removed or its disk replaced).
func (l *Log) drop() {
	if l.file != nil {
		_ = l.file.Close()
		l.file = nil
	}
}

// Check reports whether the sink works: nil when the last write
// succeeded, or when the file, lost after a failure, could be reopened.
func (l *Log) Check() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		return nil
	}
	if l.cfg.Path != Stdout && l.file == nil {
		if err := l.open(); err != nil {
			return err
		}
		l.err = nil
		return nil
	}
	return l.err
}

// Close closes the file.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file == nil {
		return nil
	}
	err := l.file.Close()
	l.file = nil
	return err
}
