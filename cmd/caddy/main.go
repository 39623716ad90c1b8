// Command caddy is Caddy with its standard modules and the segment handler.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-segment/caddy-segment/caddymodule"
)

func main() {
	caddycmd.Main()
}
