//! The few bpf(2) commands aya 0.14 does not expose in the form we need:
//! the maps a program (found by id in a tc filter) uses, and
//! BPF_PROG_TEST_RUN on a bare program fd.

use std::{
    io, mem,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

// enum bpf_cmd (include/uapi/linux/bpf.h), spelled out rather than taken
// from a bindings crate.
const BPF_PROG_TEST_RUN: u32 = 10;
const BPF_PROG_GET_FD_BY_ID: u32 = 13;
const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;

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
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// The ids of the maps a loaded program uses. `NotFound` if there is no
/// program with that id (any more).
pub(crate) fn prog_map_ids(prog_id: u32) -> io::Result<Vec<u32>> {
    let mut attr = GetFdByIdAttr {
        id: prog_id,
        ..Default::default()
    };
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: the kernel returned a new fd that nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut ids = vec![0u32; 8];
    loop {
        let mut info = ProgInfoPrefix {
            nr_map_ids: ids.len() as u32,
            map_ids: ids.as_mut_ptr() as u64,
            ..Default::default()
        };
        let mut attr = InfoAttr {
            bpf_fd: fd.as_raw_fd() as u32,
            info_len: mem::size_of_val(&info) as u32,
            info: &mut info as *mut ProgInfoPrefix as u64,
        };
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
        // The kernel wrote min(room, count) ids and set nr_map_ids to count.
        let count = info.nr_map_ids as usize;
        if count <= ids.len() {
            ids.truncate(count);
            return Ok(ids);
        }
        ids = vec![0u32; count];
    }
}

/// struct bpf_prog_info up to map_ids. Fields left 0 ask for nothing.
#[repr(C)]
#[derive(Default)]
#[allow(dead_code)] // written by the kernel, only nr_map_ids is read
struct ProgInfoPrefix {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    /// In: room in `map_ids`; out: how many maps the program uses.
    nr_map_ids: u32,
    map_ids: u64,
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

/// BPF_PROG_TEST_RUN with data and an optional context, read back into
/// `ctx_out` when given.
pub(crate) fn prog_test_run(
    prog: BorrowedFd<'_>,
    data_in: &[u8],
    data_out: &mut [u8],
    ctx_in: Option<&[u8]>,
    ctx_out: Option<&mut [u8]>,
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
    if let Some(ctx) = ctx_out {
        attr.ctx_out = ctx.as_mut_ptr() as u64;
        attr.ctx_size_out = ctx.len() as u32;
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
        assert_eq!(mem::size_of::<InfoAttr>(), 16);
        assert_eq!(mem::size_of::<GetFdByIdAttr>(), 12);
        assert_eq!(mem::size_of::<ProgInfoPrefix>(), 64);
        assert_eq!(mem::offset_of!(ProgInfoPrefix, nr_map_ids), 52);
        assert_eq!(mem::size_of::<TestRunAttr>(), 80);
        assert_eq!(mem::offset_of!(TestRunAttr, repeat), 32);
        assert_eq!(mem::offset_of!(TestRunAttr, ctx_in), 48);
        assert_eq!(mem::offset_of!(TestRunAttr, flags), 64);
    }
}
