//! User-facing programs built on the public stream API: echo, discard, http, iperf3.
