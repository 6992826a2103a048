//! The few bpf(2) commands aya 0.14 does not expose in the form we need:
//! the maps a program (found by id in a tc filter) uses,
//! BPF_PROG_TEST_RUN on a bare program fd, and what tcx links need
//! (create, pin, get, update, detach, link info, BPF_PROG_QUERY).

use std::{
    ffi::CString,
    io, mem,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

// enum bpf_cmd (include/uapi/linux/bpf.h), spelled out rather than taken
// from a bindings crate.
const BPF_OBJ_PIN: u32 = 6;
const BPF_OBJ_GET: u32 = 7;
const BPF_PROG_TEST_RUN: u32 = 10;
const BPF_PROG_GET_FD_BY_ID: u32 = 13;
const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
const BPF_PROG_QUERY: u32 = 16;
const BPF_LINK_CREATE: u32 = 28;
const BPF_LINK_UPDATE: u32 = 29;
const BPF_LINK_GET_FD_BY_ID: u32 = 30;
const BPF_LINK_DETACH: u32 = 34;

/// enum bpf_attach_type: the tcx hooks (Linux 6.6).
pub(crate) const BPF_TCX_INGRESS: u32 = 46;
pub(crate) const BPF_TCX_EGRESS: u32 = 47;
/// enum bpf_link_type.
pub(crate) const BPF_LINK_TYPE_TCX: u32 = 11;
/// BPF_LINK_CREATE (tcx): insert before the relative program/link, or
/// before every one when none is given.
pub(crate) const BPF_F_BEFORE: u32 = 1 << 3;
/// BPF_LINK_UPDATE: only if the link still runs `old_prog_fd`.
pub(crate) const BPF_F_REPLACE: u32 = 1 << 2;

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

fn new_fd(ret: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel returned a new fd that nobody else owns.
    unsafe { OwnedFd::from_raw_fd(ret as i32) }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a pin path"))
}

#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// BPF_OBJ_PIN: pins a program, map or link at `path` (on bpffs).
pub(crate) fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let c = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
    };
    bpf(BPF_OBJ_PIN, &mut attr).map(|_| ())
}

/// BPF_OBJ_GET: a new fd on the object pinned at `path`.
pub(crate) fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: c.as_ptr() as u64,
        ..Default::default()
    };
    bpf(BPF_OBJ_GET, &mut attr).map(new_fd)
}

/// link_create in union bpf_attr, with its tcx member.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative_fd: u32,
    _pad: u32,
    expected_revision: u64,
}

/// BPF_LINK_CREATE of a tcx link: `prog` on `attach_type`
/// ([`BPF_TCX_INGRESS`] / [`BPF_TCX_EGRESS`]) of `ifindex` in the
/// calling thread's netns. `flags` 0 appends after the hook's other
/// programs, [`BPF_F_BEFORE`] puts it first.
pub(crate) fn tcx_link_create(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    attach_type: u32,
    flags: u32,
) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type,
        flags,
        ..Default::default()
    };
    bpf(BPF_LINK_CREATE, &mut attr).map(new_fd)
}

#[repr(C)]
#[derive(Default)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// BPF_LINK_UPDATE: the link runs `prog` from now on, in place (same
/// link, same position; traffic sees the old or the new program, never
/// none). With `old`, only if the link still runs that program (EPERM
/// otherwise).
pub(crate) fn link_update(
    link: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    old: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let mut attr = LinkUpdateAttr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: prog.as_raw_fd() as u32,
        ..Default::default()
    };
    if let Some(old) = old {
        attr.flags = BPF_F_REPLACE;
        attr.old_prog_fd = old.as_raw_fd() as u32;
    }
    bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

/// BPF_LINK_DETACH: takes the link off its hook (its fds and pins stay,
/// defunct).
pub(crate) fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr: u32 = link.as_raw_fd() as u32;
    bpf(BPF_LINK_DETACH, &mut attr).map(|_| ())
}

/// BPF_LINK_GET_FD_BY_ID.
pub(crate) fn link_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetFdByIdAttr {
        id,
        ..Default::default()
    };
    bpf(BPF_LINK_GET_FD_BY_ID, &mut attr).map(new_fd)
}

/// BPF_PROG_GET_FD_BY_ID.
pub(crate) fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetFdByIdAttr {
        id,
        ..Default::default()
    };
    bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).map(new_fd)
}

/// struct bpf_link_info up to its tcx member.
#[repr(C)]
#[derive(Default)]
struct RawLinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    /// tcx: ifindex (0 once the device is gone or the link detached).
    ifindex: u32,
    attach_type: u32,
    _rest: [u64; 2],
}

/// What the kernel says about a link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LinkInfo {
    pub link_type: u32,
    pub id: u32,
    pub prog_id: u32,
    /// For a tcx link: its device, 0 if defunct.
    pub ifindex: u32,
    pub attach_type: u32,
}

pub(crate) fn link_info(link: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    let mut info = RawLinkInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: link.as_raw_fd() as u32,
        info_len: mem::size_of_val(&info) as u32,
        info: &mut info as *mut RawLinkInfo as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let tcx = info.link_type == BPF_LINK_TYPE_TCX;
    Ok(LinkInfo {
        link_type: info.link_type,
        id: info.id,
        prog_id: info.prog_id,
        ifindex: if tcx { info.ifindex } else { 0 },
        attach_type: if tcx { info.attach_type } else { 0 },
    })
}

/// What the kernel says about a program: its id, tag and name (the
/// first 15 bytes of the C function's name).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProgBasics {
    pub id: u32,
    pub tag: [u8; 8],
    pub name: String,
}

pub(crate) fn prog_basics(prog: BorrowedFd<'_>) -> io::Result<ProgBasics> {
    let mut info = ProgInfoPrefix::default();
    let mut attr = InfoAttr {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: mem::size_of_val(&info) as u32,
        info: &mut info as *mut ProgInfoPrefix as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let len = info
        .name
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(info.name.len());
    Ok(ProgBasics {
        id: info.id,
        tag: info.tag,
        name: String::from_utf8_lossy(&info.name[..len]).into_owned(),
    })
}

/// The query member of union bpf_attr.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_ifindex: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    count: u32,
    _pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

/// One program on a tcx hook, in run order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TcxEntry {
    pub prog_id: u32,
    /// 0 for a program attached without a link (BPF_PROG_ATTACH).
    pub link_id: u32,
}

/// BPF_PROG_QUERY of a tcx hook of `ifindex` (calling thread's netns):
/// what runs there, in order. Empty when nothing is attached; ENODEV if
/// there is no such device.
pub(crate) fn tcx_query(ifindex: u32, attach_type: u32) -> io::Result<Vec<TcxEntry>> {
    let mut room = 8usize;
    loop {
        let mut progs = vec![0u32; room];
        let mut links = vec![0u32; room];
        let mut attr = QueryAttr {
            target_ifindex: ifindex,
            attach_type,
            prog_ids: progs.as_mut_ptr() as u64,
            link_ids: links.as_mut_ptr() as u64,
            count: room as u32,
            ..Default::default()
        };
        match bpf(BPF_PROG_QUERY, &mut attr) {
            Ok(_) => {
                let n = (attr.count as usize).min(room);
                return Ok((0..n)
                    .map(|i| TcxEntry {
                        prog_id: progs[i],
                        link_id: links[i],
                    })
                    .collect());
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && attr.count as usize > room => {
                room = attr.count as usize;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The inode of the calling thread's network namespace: what tells
/// namespaces apart in pin names (a tcx link's info has the ifindex, not
/// the namespace).
pub(crate) fn netns_ino() -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino())
}

/// The ids of the maps a loaded program uses. `NotFound` if there is no
/// program with that id (any more).
pub(crate) fn prog_map_ids(prog_id: u32) -> io::Result<Vec<u32>> {
    let mut attr = GetFdByIdAttr {
        id: prog_id,
        ..Default::default()
    };
    let fd = new_fd(bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?);
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

/// struct bpf_prog_info up to name. Fields left 0 ask for nothing.
#[repr(C)]
#[derive(Default)]
#[allow(dead_code)] // written by the kernel, not every field is read
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
    name: [u8; 16],
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
        assert_eq!(mem::size_of::<ProgInfoPrefix>(), 80);
        assert_eq!(mem::offset_of!(ProgInfoPrefix, nr_map_ids), 52);
        assert_eq!(mem::offset_of!(ProgInfoPrefix, name), 64);
        assert_eq!(mem::size_of::<ObjAttr>(), 16);
        assert_eq!(mem::size_of::<LinkCreateAttr>(), 32);
        assert_eq!(mem::offset_of!(LinkCreateAttr, expected_revision), 24);
        assert_eq!(mem::size_of::<LinkUpdateAttr>(), 16);
        assert_eq!(mem::offset_of!(RawLinkInfo, ifindex), 16);
        assert_eq!(mem::size_of::<QueryAttr>(), 64);
        assert_eq!(mem::offset_of!(QueryAttr, count), 24);
        assert_eq!(mem::offset_of!(QueryAttr, link_ids), 40);
        assert_eq!(mem::offset_of!(QueryAttr, revision), 56);
        assert_eq!(mem::size_of::<TestRunAttr>(), 80);
        assert_eq!(mem::offset_of!(TestRunAttr, repeat), 32);
        assert_eq!(mem::offset_of!(TestRunAttr, ctx_in), 48);
        assert_eq!(mem::offset_of!(TestRunAttr, flags), 64);
    }
}
