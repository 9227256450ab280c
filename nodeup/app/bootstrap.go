package app

import (
	"errors"
	"fmt"
	"strings"
	"text/template"

	"gopkg.in/yaml.v3"

	"github.com/kopsnode/agents/nodeup/model"
	units "github.com/kopsnode/agents/systemd-units"
)

// BootstrapOptions configure the userdata script.
type BootstrapOptions struct {
	// NodeupURLs are mirrors of the nodeup binary, tried in order.
	NodeupURLs []string
	// NodeupSHA256 pins the binary.
	NodeupSHA256 string
	Boot         BootConfig
	// BootConfigPath is where the script writes Boot (default /etc/nodeup/boot.yaml).
	BootConfigPath string
	// Attempts is how many rounds over all mirrors (default 10); RetryDelay
	// the first pause between rounds in seconds (default 5, doubling up to 60).
	Attempts   int
	RetryDelay int
	// ConnectTimeout and MaxTime bound each download, in seconds.
	ConnectTimeout int
	MaxTime        int
}

// Validate names each problem.
func (o *BootstrapOptions) Validate() error {
	var errs []error
	if len(o.NodeupURLs) == 0 {
		errs = append(errs, errors.New("--nodeup-url: at least one mirror is required"))
	}
	for _, u := range o.NodeupURLs {
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") || strings.ContainsAny(u, " \t\n'\"\\$`") {
			errs = append(errs, fmt.Errorf("--nodeup-url: %q is not an http(s) URL", u))
		}
	}
	if !isHexSHA256(o.NodeupSHA256) {
		errs = append(errs, fmt.Errorf("--nodeup-sha256: %q is not a hex sha256", o.NodeupSHA256))
	}
	if err := o.Boot.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// shQuote quotes s for POSIX sh.
func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

var scriptTmpl = template.Must(template.New("bootstrap").Funcs(template.FuncMap{"q": shQuote}).Parse(`#!/bin/sh
# nodeup bootstrap: rendered by 'nodeup bootstrap-script'. Downloads nodeup,
# verifies it, writes the boot configuration, installs nodeup.service (a
# oneshot that converges the node on every boot) and starts it.
# NODEUP_ROOT prefixes every path written (for image builds and tests).
set -eu

ROOT="${NODEUP_ROOT:-}"
NODEUP_SHA256={{q .SHA}}
NODEUP_URLS={{q .URLs}}
ATTEMPTS={{.Attempts}}
DELAY={{.Delay}}
BIN="$ROOT{{.Bin}}"
BOOT_CONFIG="$ROOT{{.BootConfigPath}}"
UNIT="$ROOT/etc/systemd/system/nodeup.service"

log() { echo "nodeup-bootstrap: $*" >&2; }

sha256_of() {
	if command -v sha256sum >/dev/null 2>&1; then
		sha256sum "$1" | cut -d' ' -f1
	else
		openssl dgst -sha256 -r "$1" | cut -d' ' -f1
	fi
}

fetch() {
	if command -v curl >/dev/null 2>&1; then
		curl -fsSL --connect-timeout {{.ConnectTimeout}} --max-time {{.MaxTime}} -o "$2" "$1"
	elif command -v wget >/dev/null 2>&1; then
		wget -q -T {{.ConnectTimeout}} -O "$2" "$1"
	else
		log "neither curl nor wget is installed"
		return 1
	fi
}

# write_atomic DEST MODE: stdin to DEST through a temporary file and rename.
write_atomic() {
	mkdir -p "$(dirname "$1")"
	tmp="$1.tmp.$$"
	cat >"$tmp"
	chmod "$2" "$tmp"
	mv -f "$tmp" "$1"
}

install_nodeup() {
	mkdir -p "$(dirname "$BIN")"
	if [ -f "$BIN" ] && [ "$(sha256_of "$BIN")" = "$NODEUP_SHA256" ]; then
		log "reusing $BIN (sha256 matches)"
		return 0
	fi
	tmp="$BIN.download.$$"
	attempt=1
	delay=$DELAY
	while [ "$attempt" -le "$ATTEMPTS" ]; do
		for url in $NODEUP_URLS; do
			rm -f "$tmp"
			if fetch "$url" "$tmp"; then
				got=$(sha256_of "$tmp")
				if [ "$got" = "$NODEUP_SHA256" ]; then
					chmod 0755 "$tmp"
					mv -f "$tmp" "$BIN"
					log "installed nodeup from $url"
					return 0
				fi
				log "sha256 mismatch for $url: expected $NODEUP_SHA256, got $got"
			else
				log "download of $url failed"
			fi
		done
		rm -f "$tmp"
		if [ "$attempt" -lt "$ATTEMPTS" ]; then
			log "attempt $attempt of $ATTEMPTS failed; retrying in ${delay}s"
			sleep "$delay"
			delay=$((delay * 2))
			if [ "$delay" -gt 60 ]; then delay=60; fi
		fi
		attempt=$((attempt + 1))
	done
	log "could not download nodeup from any mirror: $NODEUP_URLS"
	exit 1
}

install_nodeup

write_atomic "$BOOT_CONFIG" 0600 <<'NODEUP_BOOT_CONFIG_EOF'
{{.BootYAML}}NODEUP_BOOT_CONFIG_EOF

write_atomic "$UNIT" 0644 <<'NODEUP_UNIT_EOF'
{{.Unit}}NODEUP_UNIT_EOF

systemctl daemon-reload
systemctl enable nodeup.service
systemctl start --no-block nodeup.service
log "nodeup.service started"
`))

// RenderBootstrapScript renders the userdata script.
func RenderBootstrapScript(o BootstrapOptions) (string, error) {
	if err := o.Validate(); err != nil {
		return "", err
	}
	if o.BootConfigPath == "" {
		o.BootConfigPath = model.DefaultBootConfig
	}
	if o.Attempts <= 0 {
		o.Attempts = 10
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = 5
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 10
	}
	if o.MaxTime <= 0 {
		o.MaxTime = 300
	}
	y, err := yaml.Marshal(o.Boot)
	if err != nil {
		return "", err
	}
	if strings.Contains(string(y), "NODEUP_BOOT_CONFIG_EOF") {
		return "", errors.New("boot configuration contains the heredoc delimiter")
	}
	var b strings.Builder
	err = scriptTmpl.Execute(&b, map[string]any{
		"SHA":            strings.ToLower(o.NodeupSHA256),
		"URLs":           strings.Join(o.NodeupURLs, " "),
		"Attempts":       o.Attempts,
		"Delay":          o.RetryDelay,
		"Bin":            units.NodeupBin,
		"BootConfigPath": o.BootConfigPath,
		"BootYAML":       string(y),
		"Unit":           units.Nodeup(o.BootConfigPath).Render(),
		"ConnectTimeout": o.ConnectTimeout,
		"MaxTime":        o.MaxTime,
	})
	return b.String(), err
}
