package caddymodule

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("segment", parseCaddyfile)
	// After encode, the handler receives the body before Caddy compresses it,
	// and it still wraps handle, route, reverse_proxy and file_server.
	httpcaddyfile.RegisterDirectiveOrder("segment", httpcaddyfile.After, "encode")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var handler Handler
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return &handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	segment [<matcher>] {
//	    write_key        <key>
//	    endpoint         <url>
//	    region           us|eu
//	    event            <name>
//	    space_id         <id>
//	    property         <name> <value>
//	    cookie_domain    <domain>|host
//	    cookie_max_age   <duration>
//	    cookie_format    raw|classic
//	    call             track|page
//	    batch_size       <n>
//	    flush_interval   <duration>
//	    queue_size       <n>
//	    shutdown_timeout <duration>
//	    dry_run
//	    gitbook_insights
//	    track_bots
//	    consent_cookie   <name> <value>
//	    ignore_gpc
//	    ip               full|anonymize|omit
//	}
//
// `property` and `consent_cookie` may be repeated. Durations take Caddy's
// units, including `d` for days.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name

	if d.NextArg() {
		return d.Errf("segment takes no arguments on its line, got %q: put settings in a block", d.Val())
	}

	for d.NextBlock(0) {
		name := d.Val()
		var err error
		switch name {
		case "write_key":
			err = oneArg(d, &h.WriteKey)
		case "endpoint":
			err = oneArg(d, &h.Endpoint)
		case "region":
			err = oneArg(d, &h.Region)
		case "event":
			err = oneArg(d, &h.Event)
		case "space_id":
			err = oneArg(d, &h.SpaceID)
		case "property":
			var key, value string
			if err = twoArgs(d, &key, &value); err == nil {
				if _, dup := h.Properties[key]; dup {
					return d.Errf("property %q is set twice: give each property once", key)
				}
				if h.Properties == nil {
					h.Properties = make(map[string]string)
				}
				h.Properties[key] = value
			}
		case "cookie_domain":
			err = oneArg(d, &h.CookieDomain)
		case "cookie_max_age":
			err = durationArg(d, &h.CookieMaxAge)
		case "cookie_format":
			err = oneArg(d, &h.CookieFormat)
		case "call":
			err = oneArg(d, &h.Call)
		case "batch_size":
			err = intArg(d, &h.BatchSize, defaultBatchSize)
		case "flush_interval":
			err = durationArg(d, &h.FlushInterval)
		case "queue_size":
			err = intArg(d, &h.QueueSize, defaultQueueSize)
		case "shutdown_timeout":
			err = durationArg(d, &h.ShutdownTimeout)
		case "dry_run":
			err = flag(d, &h.DryRun)
		case "gitbook_insights":
			err = flag(d, &h.GitBookInsights)
		case "track_bots":
			err = flag(d, &h.TrackBots)
		case "ignore_gpc":
			err = flag(d, &h.IgnoreGPC)
		case "consent_cookie":
			var c ConsentCookie
			if err = twoArgs(d, &c.Name, &c.Value); err == nil {
				h.ConsentCookies = append(h.ConsentCookies, c)
			}
		case "ip":
			err = oneArg(d, &h.IP)
		default:
			return d.Errf("unknown subdirective %q in segment: see the README for the list of settings", name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func oneArg(d *caddyfile.Dispenser, target *string) error {
	name := d.Val()
	args := d.RemainingArgs()
	if len(args) != 1 {
		return d.Errf("%s takes exactly one value, got %d%s: write %s <value>", name, len(args), quoteArgs(name, args), name)
	}
	*target = args[0]
	return nil
}

func twoArgs(d *caddyfile.Dispenser, first, second *string) error {
	name := d.Val()
	args := d.RemainingArgs()
	if len(args) != 2 {
		return d.Errf("%s takes exactly two values, got %d%s: write %s <name> <value>", name, len(args), quoteArgs(name, args), name)
	}
	*first, *second = args[0], args[1]
	return nil
}

// quoteArgs lists the values given to a subdirective for an error message,
// except for write_key, whose values may hold the secret key.
func quoteArgs(name string, args []string) string {
	if len(args) == 0 || name == "write_key" {
		return ""
	}
	quoted := make([]string, len(args))
	for i, arg := range args {
		quoted[i] = strconv.Quote(arg)
	}
	return " (" + strings.Join(quoted, " ") + ")"
}

func flag(d *caddyfile.Dispenser, target *bool) error {
	name := d.Val()
	if args := d.RemainingArgs(); len(args) != 0 {
		return d.Errf("%s takes no value, got %q: write %s alone on its line", name, strings.Join(args, " "), name)
	}
	*target = true
	return nil
}

func intArg(d *caddyfile.Dispenser, target *int, example int) error {
	name := d.Val()
	var value string
	if err := oneArg(d, &value); err != nil {
		return err
	}
	// Zero is rejected here because the handler reads it as unset and would
	// quietly use the default.
	n, err := strconv.Atoi(value)
	if err != nil || n < 1 {
		return d.Errf("%s %q is not a positive whole number: write a number such as %s %d", name, value, name, example)
	}
	*target = n
	return nil
}

func durationArg(d *caddyfile.Dispenser, target *caddy.Duration) error {
	name := d.Val()
	var value string
	if err := oneArg(d, &value); err != nil {
		return err
	}
	duration, err := caddy.ParseDuration(value)
	if err != nil {
		return d.Errf("%s %q is not a duration: write one such as 5s, 10m or 365d", name, value)
	}
	// Zero is rejected here because the handler reads it as unset and would
	// quietly use the default.
	if duration <= 0 {
		return d.Errf("%s %q is not a positive duration: write one such as 5s, 10m or 365d", name, value)
	}
	*target = caddy.Duration(duration)
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Handler)(nil)
