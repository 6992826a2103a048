//! The eBPF objects compiled by build.rs.

/// bpf/mgmt.bpf.c. aya needs the ELF image 8-byte aligned.
pub(crate) static MGMT_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mgmt.bpf.o"));

/// bpf/l2.bpf.c.
pub(crate) static L2_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/l2.bpf.o"));

/// bpf/vip_fence.bpf.c: the kernel-enforced VIP fence (loaded on its own,
/// without the datapath).
pub(crate) static VIP_FENCE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vip_fence.bpf.o"));
