//! The part of libsrt 1.5's C API (`/usr/include/srt/srt.h`) this crate calls, declared by
//! hand: functions, option numbers and error codes, with the values of that header.
//!
//! Contract: declarations only; every call is made, and its result read, in `lib.rs`.

use std::os::raw::{c_char, c_int, c_void};

pub type SrtSocket = i32;

pub const SRT_INVALID_SOCK: SrtSocket = -1;
pub const SRT_ERROR: c_int = -1;

// SRT_SOCKOPT
pub const SRTO_SNDSYN: c_int = 1;
pub const SRTO_RCVSYN: c_int = 2;
pub const SRTO_TSBPDMODE: c_int = 22;
pub const SRTO_LATENCY: c_int = 23;
pub const SRTO_CONNTIMEO: c_int = 36;
pub const SRTO_STREAMID: c_int = 46;
pub const SRTO_TRANSTYPE: c_int = 50;

// SRT_TRANSTYPE
pub const SRTT_LIVE: c_int = 0;

// SRT_SOCKSTATUS
pub const SRTS_CONNECTED: c_int = 5;

// SRT_ERRNO: 1000 * major + minor.
pub const SRT_ECONNREJ: c_int = 1002;
pub const SRT_EASYNCRCV: c_int = 6002;

/// syslog's `LOG_ERR`: libsrt logs errors only (a refused caller is ours to report).
pub const LOG_ERR: c_int = 3;

// SRT_EPOLL_OPT
pub const SRT_EPOLL_IN: c_int = 0x1;
pub const SRT_EPOLL_ERR: c_int = 0x8;

/// The longest stream id libsrt carries (its `MAX_SID_LENGTH`, not in the public header).
pub const STREAMID_MAX: usize = 512;

#[repr(C)]
pub struct SrtEpollEvent {
    pub fd: SrtSocket,
    pub events: c_int,
}

pub type ListenCallback = extern "C" fn(
    opaque: *mut c_void,
    ns: SrtSocket,
    hs_version: c_int,
    peer: *const libc::sockaddr,
    stream_id: *const c_char,
) -> c_int;

#[link(name = "srt-gnutls")]
extern "C" {
    pub fn srt_startup() -> c_int;
    pub fn srt_setloglevel(level: c_int);
    pub fn srt_create_socket() -> SrtSocket;
    pub fn srt_setsockflag(u: SrtSocket, opt: c_int, val: *const c_void, len: c_int) -> c_int;
    pub fn srt_getsockflag(u: SrtSocket, opt: c_int, val: *mut c_void, len: *mut c_int) -> c_int;
    pub fn srt_bind(u: SrtSocket, name: *const libc::sockaddr, len: c_int) -> c_int;
    pub fn srt_listen(u: SrtSocket, backlog: c_int) -> c_int;
    pub fn srt_listen_callback(u: SrtSocket, hook: ListenCallback, opaque: *mut c_void) -> c_int;
    pub fn srt_accept(u: SrtSocket, addr: *mut libc::sockaddr, len: *mut c_int) -> SrtSocket;
    pub fn srt_connect(u: SrtSocket, name: *const libc::sockaddr, len: c_int) -> c_int;
    pub fn srt_close(u: SrtSocket) -> c_int;
    pub fn srt_recvmsg(u: SrtSocket, buf: *mut c_char, len: c_int) -> c_int;
    pub fn srt_send(u: SrtSocket, buf: *const c_char, len: c_int) -> c_int;
    pub fn srt_getsockstate(u: SrtSocket) -> c_int;
    pub fn srt_getsockname(u: SrtSocket, name: *mut libc::sockaddr, len: *mut c_int) -> c_int;
    pub fn srt_getlasterror(errno_loc: *mut c_int) -> c_int;
    pub fn srt_getlasterror_str() -> *const c_char;
    pub fn srt_setrejectreason(u: SrtSocket, value: c_int) -> c_int;
    pub fn srt_getrejectreason(u: SrtSocket) -> c_int;
    pub fn srt_epoll_create() -> c_int;
    pub fn srt_epoll_add_usock(eid: c_int, u: SrtSocket, events: *const c_int) -> c_int;
    pub fn srt_epoll_uwait(eid: c_int, fds: *mut SrtEpollEvent, n: c_int, ms: i64) -> c_int;
    pub fn srt_epoll_release(eid: c_int) -> c_int;
}
