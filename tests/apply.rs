//! Applying: check, reload, roll back, against a real HAProxy.
