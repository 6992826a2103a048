//! The DHCP helper: a DHCPv4 server for VM networks (pools and per-VM
//! reservations) and a client for VIPs and gateway discovery.
//!
//! Nothing is implemented here yet (see the DHCP issue); this crate exists
//! so the workspace has its final shape. It exports nothing on purpose.
