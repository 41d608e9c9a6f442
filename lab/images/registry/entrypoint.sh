#!/bin/sh
# As the entrypoint of the registry:2 and registry:3 images: a *.yml argument is the
# config to serve; registry's own subcommands run as they are.
set -e
case "$1" in
  *.yaml | *.yml) set -- registry serve "$@" ;;
  serve | garbage-collect | help | -*) set -- registry "$@" ;;
esac
exec "$@"
