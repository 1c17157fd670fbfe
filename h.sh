#!/bin/sh
env | grep ETCD_WATCH >> /tmp/etx/events; echo --- >> /tmp/etx/events
case "$ETCD_WATCH_KEY" in *fail*) exit 6;; esac
