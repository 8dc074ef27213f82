//! Helpers for integration tests that run the kernel's TCP against tcpstack in network namespaces.
