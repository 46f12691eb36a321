#!/bin/sh
# An example add-on: says hello every few seconds until it is stopped.
echo "hello from $ADDON_ID $ADDON_VERSION (config: $ADDON_CONFIG_FILE) args: $*"
trap 'echo "hello: stopping"; exit 0' TERM INT
while true; do
  sleep 5 &
  wait $!
  echo "hello $ADDON_VERSION still here"
done
