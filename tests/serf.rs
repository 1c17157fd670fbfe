//! Serf: real agents on loopback, hacfg as their handler.
