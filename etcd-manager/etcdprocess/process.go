// Package etcdprocess runs one real etcd server as a child process: the
// binary of the wanted version from a per-version directory
// (<root>/v<version>/etcd), TLS for peers and clients, output to slog.
package etcdprocess

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// TLSFiles are the PEM files of one TLS endpoint.
type TLSFiles struct {
	CertFile, KeyFile, CAFile string
}

// Config describes the etcd server to run.
type Config struct {
	// BinDirRoot holds one v<version>/etcd per version.
	BinDirRoot string
	Version    string
	Name       string
	DataDir    string
	// URLs: what to listen on and what to advertise.
	ListenPeerURLs, AdvertisePeerURLs     []string
	ListenClientURLs, AdvertiseClientURLs []string
	// InitialCluster is "name=url,...", InitialClusterState "new" or
	// "existing", InitialClusterToken the cluster's token.
	InitialCluster, InitialClusterState, InitialClusterToken string
	PeerTLS, ClientTLS                                       TLSFiles
	// LogLevel is etcd's --log-level (default "info").
	LogLevel string
	// ExtraEnv is added to the environment (tests).
	ExtraEnv []string
	Logger   *slog.Logger

	// ForceNewCluster starts etcd with --force-new-cluster: the member's
	// data becomes a one-member cluster (quorum-loss recovery; run once,
	// then restart without it).
	ForceNewCluster bool
}

// BinaryPath returns <root>/v<version>/etcd, or an error naming the version
// and the directory looked in.
func BinaryPath(root, version string) (string, error) {
	if version == "" {
		return "", errors.New("etcd version is empty")
	}
	p := filepath.Join(root, "v"+strings.TrimPrefix(version, "v"), "etcd")
	st, err := os.Stat(p)
	if err != nil {
		avail, _ := filepath.Glob(filepath.Join(root, "v*", "etcd"))
		var names []string
		for _, a := range avail {
			names = append(names, strings.TrimPrefix(filepath.Base(filepath.Dir(a)), "v"))
		}
		return "", fmt.Errorf("etcd version %s is not installed: %s not found (available in %s: %s)", version, p, root, orNone(names))
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("etcd version %s: %s is not an executable file", version, p)
	}
	return p, nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// Validate returns every problem with the config.
func (c Config) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("name is empty"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is empty"))
	}
	if len(c.ListenPeerURLs) == 0 || len(c.AdvertisePeerURLs) == 0 {
		errs = append(errs, errors.New("peer URLs are empty"))
	}
	if len(c.ListenClientURLs) == 0 || len(c.AdvertiseClientURLs) == 0 {
		errs = append(errs, errors.New("client URLs are empty"))
	}
	switch c.InitialClusterState {
	case "new", "existing":
	default:
		errs = append(errs, fmt.Errorf("initial cluster state %q is not new or existing", c.InitialClusterState))
	}
	if _, err := BinaryPath(c.BinDirRoot, c.Version); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Args returns etcd's command line (without the binary).
func (c Config) Args() []string {
	level := c.LogLevel
	if level == "" {
		level = "info"
	}
	a := []string{
		"--name=" + c.Name,
		"--data-dir=" + c.DataDir,
		"--listen-peer-urls=" + strings.Join(c.ListenPeerURLs, ","),
		"--initial-advertise-peer-urls=" + strings.Join(c.AdvertisePeerURLs, ","),
		"--listen-client-urls=" + strings.Join(c.ListenClientURLs, ","),
		"--advertise-client-urls=" + strings.Join(c.AdvertiseClientURLs, ","),
		"--initial-cluster=" + c.InitialCluster,
		"--initial-cluster-state=" + c.InitialClusterState,
		"--initial-cluster-token=" + c.InitialClusterToken,
		"--log-level=" + level,
		"--logger=zap",
		"--log-outputs=stderr",
		"--strict-reconfig-check=true",
	}
	if c.ForceNewCluster {
		a = append(a, "--force-new-cluster")
	}
	if c.PeerTLS.CertFile != "" {
		a = append(a,
			"--peer-cert-file="+c.PeerTLS.CertFile,
			"--peer-key-file="+c.PeerTLS.KeyFile,
			"--peer-trusted-ca-file="+c.PeerTLS.CAFile,
			"--peer-client-cert-auth=true")
	}
	if c.ClientTLS.CertFile != "" {
		a = append(a,
			"--cert-file="+c.ClientTLS.CertFile,
			"--key-file="+c.ClientTLS.KeyFile,
			"--trusted-ca-file="+c.ClientTLS.CAFile,
			"--client-cert-auth=true")
	}
	return a
}

// Process is a running etcd.
type Process struct {
	cmd    *exec.Cmd
	logger *slog.Logger
	done   chan struct{}
	logsWG sync.WaitGroup

	mu       sync.Mutex // guards exitErr
	exitErr  error
	stopOnce sync.Once
}

// Start starts etcd. The process is not tied to ctx (it outlives the call);
// stop it with Stop.
func Start(cfg Config) (*Process, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("etcd config for member %s: %w", cfg.Name, err)
	}
	bin, _ := BinaryPath(cfg.BinDirRoot, cfg.Version)
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("etcd", cfg.Name, "version", cfg.Version)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating etcd data dir %s: %w", cfg.DataDir, err)
	}
	cmd := exec.Command(bin, cfg.Args()...)
	cmd.Env = append(os.Environ(), cfg.ExtraEnv...)
	// Own process group, so a signal to the manager's terminal does not
	// reach etcd before the manager decides to stop it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	p := &Process{cmd: cmd, logger: logger, done: make(chan struct{})}
	p.logsWG.Add(2)
	go p.pump(stdout)
	go p.pump(stderr)
	go func() {
		p.logsWG.Wait()
		err := cmd.Wait()
		p.mu.Lock()
		p.exitErr = err
		p.mu.Unlock()
		logger.Info("etcd exited", "pid", cmd.Process.Pid, "err", err)
		close(p.done)
	}()
	logger.Info("etcd started", "pid", cmd.Process.Pid, "binary", bin, "initialClusterState", cfg.InitialClusterState)
	return p, nil
}

func (p *Process) pump(r io.Reader) {
	defer p.logsWG.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		level := slog.LevelInfo
		switch {
		case strings.Contains(line, `"level":"warn"`):
			level = slog.LevelWarn
		case strings.Contains(line, `"level":"error"`), strings.Contains(line, `"level":"fatal"`), strings.Contains(line, `"level":"panic"`):
			level = slog.LevelError
		case strings.Contains(line, `"level":"debug"`):
			level = slog.LevelDebug
		}
		p.logger.Log(context.Background(), level, "etcd output", "line", line)
	}
	_, _ = io.Copy(io.Discard, r)
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitErr is the exit status once Done is closed.
func (p *Process) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

// Running reports whether the process has not exited.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM, waits until ctx ends, then kills. It returns when the
// process has exited. Safe to call twice.
func (p *Process) Stop(ctx context.Context) error {
	p.stopOnce.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	})
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
	}
	_ = p.cmd.Process.Kill()
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		return fmt.Errorf("etcd pid %d did not exit after SIGKILL", p.Pid())
	}
}

// Kill kills the process at once (tests: a machine dying) and waits.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}
