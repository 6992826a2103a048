//! The few bpf(2) commands aya 0.14 does not expose in the form we need:
//! opening a pinned link to read its tcx target, forcing a link detach, and
//! BPF_PROG_TEST_RUN on a bare program fd.

use std::{
    ffi::CString,
    io, mem,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

// enum bpf_cmd (include/uapi/linux/bpf.h). Debian 12's headers predate tcx,
// so these are spelled out rather than taken from a bindings crate.
const BPF_OBJ_GET: u32 = 7;
const BPF_PROG_TEST_RUN: u32 = 10;
const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
const BPF_LINK_DETACH: u32 = 34;

pub(crate) const BPF_LINK_TYPE_TCX: u32 = 11;
pub(crate) const BPF_TCX_INGRESS: u32 = 46;
pub(crate) const BPF_TCX_EGRESS: u32 = 47;

fn bpf<T>(cmd: u32, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid, initialised repr(C) prefix of union bpf_attr
    // for `cmd`; the kernel reads/writes at most size_of::<T>() bytes.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut T,
            mem::size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

#[repr(C)]
#[derive(Default)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

/// Opens a pinned object (BPF_OBJ_GET).
pub(crate) fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = ObjGetAttr {
        pathname: c.as_ptr() as u64,
        ..Default::default()
    };
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The part of `struct bpf_link_info` we use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LinkInfo {
    pub link_type: u32,
    pub id: u32,
    pub prog_id: u32,
    /// For tcx links: the device, 0 once the device is gone.
    pub tcx_ifindex: u32,
    pub tcx_attach_type: u32,
}

pub(crate) fn link_info(fd: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    // struct bpf_link_info: type, id, prog_id, then an 8-byte aligned union
    // whose tcx member is { ifindex, attach_type } at offset 16. A short
    // buffer is fine: the kernel copies min(its size, info_len).
    let mut buf = [0u32; 16];
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: mem::size_of_val(&buf) as u32,
        info: buf.as_mut_ptr() as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(LinkInfo {
        link_type: buf[0],
        id: buf[1],
        prog_id: buf[2],
        tcx_ifindex: buf[4],
        tcx_attach_type: buf[5],
    })
}

#[repr(C)]
struct LinkDetachAttr {
    link_fd: u32,
}

/// Detaches a link even if other fds or pins still reference it.
pub(crate) fn link_detach(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkDetachAttr {
        link_fd: fd.as_raw_fd() as u32,
    };
    bpf(BPF_LINK_DETACH, &mut attr).map(drop)
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

pub(crate) struct RawTestRun {
    pub retval: u32,
    pub data_size_out: u32,
    pub duration: u32,
}

/// BPF_PROG_TEST_RUN with data and an optional context.
pub(crate) fn prog_test_run(
    prog: BorrowedFd<'_>,
    data_in: &[u8],
    data_out: &mut [u8],
    ctx_in: Option<&[u8]>,
    repeat: u32,
) -> io::Result<RawTestRun> {
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: data_in.len() as u32,
        data_size_out: data_out.len() as u32,
        data_in: data_in.as_ptr() as u64,
        data_out: data_out.as_mut_ptr() as u64,
        repeat,
        ..Default::default()
    };
    if let Some(ctx) = ctx_in {
        attr.ctx_in = ctx.as_ptr() as u64;
        attr.ctx_size_in = ctx.len() as u32;
    }
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(RawTestRun {
        retval: attr.retval,
        data_size_out: attr.data_size_out,
        duration: attr.duration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layouts_match_the_uapi() {
        assert_eq!(mem::size_of::<ObjGetAttr>(), 24);
        assert_eq!(mem::size_of::<InfoAttr>(), 16);
        assert_eq!(mem::size_of::<TestRunAttr>(), 80);
        assert_eq!(mem::offset_of!(TestRunAttr, repeat), 32);
        assert_eq!(mem::offset_of!(TestRunAttr, ctx_in), 48);
        assert_eq!(mem::offset_of!(TestRunAttr, flags), 64);
    }
}
