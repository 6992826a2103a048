//! Running a loaded program on a crafted frame (BPF_PROG_TEST_RUN).

use std::os::fd::BorrowedFd;

use crate::{sys, DatapathError};

/// tc verdicts, as returned in [`TestRunOutput::retval`].
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;
/// No verdict (-1 as u32): the next filter on the hook runs (the VIP
/// fence's "pass").
pub const TC_ACT_UNSPEC: u32 = u32::MAX;

/// The fields of `struct __sk_buff` the kernel accepts as test-run input
/// for skb programs (everything else must be zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkbContext {
    /// Device the frame is seen on (`skb->ifindex`). The kernel looks it up
    /// in the calling thread's netns and fails with ENODEV if it is not
    /// there; 0 or 1 run on loopback. Its MAC decides `pkt_type`.
    pub ifindex: u32,
    /// `skb->ingress_ifindex`.
    pub ingress_ifindex: u32,
    pub mark: u32,
    pub priority: u32,
    /// `skb->cb` (tc's private control block).
    pub cb: [u32; 5],
    /// `skb_shinfo(skb)->gso_segs` / `gso_size`: non-zero `gso_size` makes
    /// the frame a GSO frame (segments of `gso_size` payload bytes).
    pub gso_segs: u32,
    pub gso_size: u32,
}

// Offsets in struct __sk_buff (stable UAPI).
const MARK: usize = 8;
const PRIORITY: usize = 32;
const INGRESS_IFINDEX: usize = 36;
const IFINDEX: usize = 40;
const CB: usize = 48;
const GSO_SEGS: usize = 164;
const GSO_SIZE: usize = 176;
/// sizeof(struct __sk_buff).
const SKB_CTX_LEN: usize = 192;

fn get_u32(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

impl SkbContext {
    /// `struct __sk_buff` with the fields the kernel accepts as input
    /// (everything else zero).
    fn to_bytes(self) -> Vec<u8> {
        let mut b = vec![0u8; SKB_CTX_LEN];
        let mut put = |off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        put(MARK, self.mark);
        put(PRIORITY, self.priority);
        put(INGRESS_IFINDEX, self.ingress_ifindex);
        put(IFINDEX, self.ifindex);
        for (i, v) in self.cb.iter().enumerate() {
            put(CB + 4 * i, *v);
        }
        put(GSO_SEGS, self.gso_segs);
        put(GSO_SIZE, self.gso_size);
        b
    }
}

/// What a test run returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The program's return value (a tc verdict for classifiers).
    pub retval: u32,
    /// The frame as the program left it.
    pub data_out: Vec<u8>,
    /// Average run time per repetition, as measured by the kernel.
    pub duration_ns: u32,
    /// `skb->cb` as the program left it (the L2 programs write a trace
    /// record there: [`crate::L2Trace::from_cb`]).
    pub cb: [u32; 5],
    /// `skb->mark` as the program left it.
    pub mark: u32,
}

/// Room for programs that grow the frame (encapsulation, VLAN push).
const DATA_OUT_HEADROOM: usize = 512;

/// Runs the classifier `prog` once per `repeat` (0 means 1) on `data_in`
/// (a full Ethernet frame, at least 14 bytes) with BPF_PROG_TEST_RUN.
/// Side effects on maps are real; redirects are reported, not performed.
pub fn test_run(
    prog: BorrowedFd<'_>,
    data_in: &[u8],
    ctx: Option<&SkbContext>,
    repeat: u32,
) -> Result<TestRunOutput, DatapathError> {
    // Without a context the kernel runs on loopback with a zero one and
    // returns nothing; give it zeros so cb and mark come back.
    let ctx_bytes = ctx.copied().unwrap_or_default().to_bytes();
    let mut ctx_out = vec![0u8; SKB_CTX_LEN];
    let mut out = vec![0u8; data_in.len() + DATA_OUT_HEADROOM];
    let r = sys::prog_test_run(
        prog,
        data_in,
        &mut out,
        Some(&ctx_bytes),
        Some(&mut ctx_out),
        repeat,
    )
    .map_err(|cause| DatapathError::Syscall {
        call: "BPF_PROG_TEST_RUN",
        cause,
    })?;
    out.truncate(r.data_size_out as usize);
    let mut cb = [0u32; 5];
    for (i, v) in cb.iter_mut().enumerate() {
        *v = get_u32(&ctx_out, CB + 4 * i);
    }
    Ok(TestRunOutput {
        retval: r.retval,
        data_out: out,
        duration_ns: r.duration,
        cb,
        mark: get_u32(&ctx_out, MARK),
    })
}
