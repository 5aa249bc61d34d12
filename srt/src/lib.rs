//! SRT through Debian's libsrt: a [`Listener`] that lets a [`Gatekeeper`] decide on each
//! caller, by its address and stream id, before its handshake completes (a refused caller
//! gets the gatekeeper's reject code and costs nothing more); [`Socket`]s read without
//! blocking, one message at a time; and [`connect`], a caller for publishers and tests.
//!
//! Contract: live mode (`SRTT_LIVE`) only, the mode ffmpeg's and OBS's MPEG-TS over SRT
//! uses. Every libsrt call's failure becomes an [`SrtError`] with libsrt's own words; none
//! panics. The gatekeeper runs on libsrt's receiving thread: it must answer at once, and a
//! panic in it refuses that caller (code [`REJECT_INTERNAL`]) instead of crossing into C.
//! A listener's sockets are closed when dropped; the accepted sockets are the caller's.

mod ffi;

use std::ffi::CStr;
use std::mem::{size_of, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::raw::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Once};
use std::time::Duration;

use ffi::SrtSocket;

/// The reject code a caller gets when the gatekeeper itself failed (SRT's `SRT_REJX_ISE`).
pub const REJECT_INTERNAL: i32 = 1500;
/// The lowest reject code an application may give: below it, libsrt's own reasons.
pub const REJECT_APPLICATION_MIN: i32 = 1000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SrtError {
    /// A libsrt call failed: which, its error number and its words.
    #[error("SRT {call}: {text} ({code})")]
    Call {
        call: &'static str,
        code: i32,
        text: String,
    },
    /// The listener refused the connection: its reject code (1000 and above: the
    /// application's; below: libsrt's own reason, such as a timeout).
    #[error("the SRT listener refused the connection (reject code {0})")]
    Rejected(i32),
    /// The peer is gone, or the connection broke.
    #[error("the SRT connection is closed")]
    Closed,
    /// A stream id over libsrt's 512 bytes, or holding a NUL.
    #[error("an SRT stream id must be at most 512 bytes and hold no NUL")]
    BadStreamId,
}

pub type Result<T> = std::result::Result<T, SrtError>;

/// Decides on each caller before its handshake completes.
pub trait Gatekeeper: Send + Sync + 'static {
    /// `Ok` admits the caller; `Err(code)` refuses it with that reject code (at least
    /// [`REJECT_APPLICATION_MIN`]). `stream_id` is empty when the caller sent none.
    fn check(&self, peer: SocketAddr, stream_id: &str) -> std::result::Result<(), i32>;
}

fn startup() {
    static STARTED: Once = Once::new();
    // SAFETY: no arguments; libsrt makes it idempotent, `Once` makes it once.
    STARTED.call_once(|| unsafe {
        ffi::srt_startup();
        ffi::srt_setloglevel(ffi::LOG_ERR);
    });
}

/// The last libsrt error of this thread, for `call`.
fn last_error(call: &'static str) -> SrtError {
    // SAFETY: a null errno location is allowed; the string is libsrt's thread-local buffer,
    // copied before any other call.
    let (code, text) = unsafe {
        let code = ffi::srt_getlasterror(std::ptr::null_mut());
        let text = ffi::srt_getlasterror_str();
        let text = if text.is_null() {
            String::new()
        } else {
            CStr::from_ptr(text).to_string_lossy().into_owned()
        };
        (code, text)
    };
    SrtError::Call { call, code, text }
}

fn check(call: &'static str, result: c_int) -> Result<()> {
    if result == ffi::SRT_ERROR {
        Err(last_error(call))
    } else {
        Ok(())
    }
}

/// One SRT socket, closed when dropped.
#[derive(Debug)]
struct Handle(SrtSocket);

impl Handle {
    fn new() -> Result<Self> {
        startup();
        // SAFETY: no arguments.
        let sock = unsafe { ffi::srt_create_socket() };
        if sock == ffi::SRT_INVALID_SOCK {
            return Err(last_error("srt_create_socket"));
        }
        let handle = Self(sock);
        handle.set_int("SRTO_TRANSTYPE", ffi::SRTO_TRANSTYPE, ffi::SRTT_LIVE)?;
        Ok(handle)
    }

    fn set_int(&self, name: &'static str, opt: c_int, value: c_int) -> Result<()> {
        // SAFETY: the option takes an int; the pointer is valid for the call.
        let r = unsafe {
            ffi::srt_setsockflag(
                self.0,
                opt,
                (&value as *const c_int).cast(),
                size_of::<c_int>() as c_int,
            )
        };
        check(name, r)
    }

    fn set_bool(&self, name: &'static str, opt: c_int, value: bool) -> Result<()> {
        // libsrt's boolean options take a C `bool` (one byte) or an int; an int is accepted.
        self.set_int(name, opt, c_int::from(value))
    }

    fn set_stream_id(&self, stream_id: &str) -> Result<()> {
        if stream_id.len() > ffi::STREAMID_MAX || stream_id.contains('\0') {
            return Err(SrtError::BadStreamId);
        }
        // SAFETY: a byte string of the given length, valid for the call.
        let r = unsafe {
            ffi::srt_setsockflag(
                self.0,
                ffi::SRTO_STREAMID,
                stream_id.as_ptr().cast(),
                stream_id.len() as c_int,
            )
        };
        check("SRTO_STREAMID", r)
    }

    fn stream_id(&self) -> Result<String> {
        let mut buf = [0u8; ffi::STREAMID_MAX + 1];
        let mut len = buf.len() as c_int;
        // SAFETY: the buffer and its length are valid; libsrt writes at most `len` bytes and
        // says how many.
        let r = unsafe {
            ffi::srt_getsockflag(
                self.0,
                ffi::SRTO_STREAMID,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        check("SRTO_STREAMID", r)?;
        let len = usize::try_from(len).unwrap_or(0).min(ffi::STREAMID_MAX);
        Ok(String::from_utf8_lossy(&buf[..len]).into_owned())
    }

    fn connected(&self) -> bool {
        // SAFETY: any socket id is accepted; an unknown one answers "nonexistent".
        unsafe { ffi::srt_getsockstate(self.0) == ffi::SRTS_CONNECTED }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: closing a socket this handle owns, once.
        unsafe {
            ffi::srt_close(self.0);
        }
    }
}

/// Listens on one UDP address for SRT callers.
pub struct Listener {
    handle: Handle,
    eid: c_int,
    local: SocketAddr,
    /// Where the callback finds the gatekeeper; emptied when the listener drops.
    slot: &'static GateSlot,
}

/// The gatekeeper as libsrt's callback reaches it. libsrt may still be running the callback
/// on its receiving thread when the listener's socket is closed, so the slot itself is never
/// freed (a few bytes per listener); what it holds, the gatekeeper and everything it owns,
/// is let go when the listener drops.
type GateSlot = std::sync::Mutex<Option<Arc<dyn Gatekeeper>>>;

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("local", &self.local)
            .finish()
    }
}

/// libsrt's listen callback: asks the gatekeeper behind `opaque`, refuses with its code.
extern "C" fn on_caller(
    opaque: *mut c_void,
    ns: SrtSocket,
    _hs_version: c_int,
    peer: *const libc::sockaddr,
    stream_id: *const c_char,
) -> c_int {
    let decided = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `opaque` is the listener's `GateSlot`, never freed (see `Listener::bind`);
        // `peer` and `stream_id` are libsrt's, valid during the call (the stream id may be
        // null).
        let slot = unsafe { &*(opaque as *const GateSlot) };
        let gate = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            // The listener is gone: nobody decides any more.
            .ok_or(REJECT_INTERNAL)?;
        let peer = unsafe { from_sockaddr(peer) }.ok_or(REJECT_INTERNAL)?;
        let stream_id = if stream_id.is_null() {
            String::new()
        } else {
            unsafe { CStr::from_ptr(stream_id) }
                .to_string_lossy()
                .into_owned()
        };
        gate.check(peer, &stream_id)
    }));
    let code = match decided {
        Ok(Ok(())) => return 0,
        Ok(Err(code)) => code.max(REJECT_APPLICATION_MIN),
        Err(_) => REJECT_INTERNAL,
    };
    // SAFETY: `ns` is the socket libsrt is deciding on.
    unsafe {
        ffi::srt_setrejectreason(ns, code);
    }
    -1
}

impl Listener {
    /// Binds `addr` and listens; `gate` decides on every caller. `latency` is the receiver's
    /// buffer (SRT's TSBPD delay) each accepted connection gets.
    pub fn bind(addr: SocketAddr, latency: Duration, gate: Arc<dyn Gatekeeper>) -> Result<Self> {
        let handle = Handle::new()?;
        let ms = c_int::try_from(latency.as_millis()).unwrap_or(c_int::MAX);
        handle.set_int("SRTO_LATENCY", ffi::SRTO_LATENCY, ms)?;
        // Accepting, and reading the sockets it accepts, never block.
        handle.set_bool("SRTO_RCVSYN", ffi::SRTO_RCVSYN, false)?;
        // Packets are handed on as they arrive, in order, rather than each at its time by a
        // thread per connection: the reader re-times the media itself.
        handle.set_bool("SRTO_TSBPDMODE", ffi::SRTO_TSBPDMODE, false)?;
        handle.set_bool("SRTO_SNDSYN", ffi::SRTO_SNDSYN, false)?;
        let slot: &'static GateSlot = Box::leak(Box::new(std::sync::Mutex::new(Some(gate))));
        let listening = Self::listen(&handle, addr, slot);
        match listening {
            Ok((eid, local)) => Ok(Self {
                handle,
                eid,
                local,
                slot,
            }),
            Err(err) => {
                // Not listening: the gatekeeper goes at once, as on drop.
                slot.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                Err(err)
            }
        }
    }

    /// Sets the callback on `slot`, binds, listens, and waits for callers with an epoll id:
    /// that id and the address.
    fn listen(
        handle: &Handle,
        addr: SocketAddr,
        slot: &'static GateSlot,
    ) -> Result<(c_int, SocketAddr)> {
        // SAFETY: the callback matches libsrt's type; `slot` lives forever.
        let r = unsafe {
            ffi::srt_listen_callback(
                handle.0,
                on_caller,
                (slot as *const GateSlot).cast_mut().cast(),
            )
        };
        check("srt_listen_callback", r)?;
        let (storage, len) = to_sockaddr(addr);
        // SAFETY: a sockaddr of the given length.
        let r = unsafe {
            ffi::srt_bind(
                handle.0,
                (&storage as *const libc::sockaddr_storage).cast(),
                len,
            )
        };
        check("srt_bind", r)?;
        // SAFETY: a bound socket.
        check("srt_listen", unsafe { ffi::srt_listen(handle.0, 64) })?;
        let local = local_addr(handle)?;
        // SAFETY: no arguments; the id is released on drop.
        let eid = unsafe { ffi::srt_epoll_create() };
        if eid < 0 {
            return Err(last_error("srt_epoll_create"));
        }
        let events = ffi::SRT_EPOLL_IN | ffi::SRT_EPOLL_ERR;
        // SAFETY: a valid epoll id, socket and event mask.
        let r = unsafe { ffi::srt_epoll_add_usock(eid, handle.0, &events) };
        if r == ffi::SRT_ERROR {
            let err = last_error("srt_epoll_add_usock");
            // SAFETY: the id made above.
            unsafe { ffi::srt_epoll_release(eid) };
            return Err(err);
        }
        Ok((eid, local))
    }

    /// Where it listens (the port chosen when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The next caller the gatekeeper admitted and whose handshake completed, waiting at most
    /// `wait`: its socket, its address and its stream id; `None` if none came.
    pub fn accept(&self, wait: Duration) -> Result<Option<Accepted>> {
        let mut ready = [ffi::SrtEpollEvent { fd: 0, events: 0 }];
        let ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        // SAFETY: a valid epoll id and a one-element array.
        let n = unsafe { ffi::srt_epoll_uwait(self.eid, ready.as_mut_ptr(), 1, ms) };
        if n <= 0 {
            return Ok(None);
        }
        let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
        let mut len = size_of::<libc::sockaddr_storage>() as c_int;
        // SAFETY: storage for any address, and its length.
        let sock = unsafe { ffi::srt_accept(self.handle.0, storage.as_mut_ptr().cast(), &mut len) };
        if sock == ffi::SRT_INVALID_SOCK {
            return match last_error("srt_accept") {
                SrtError::Call { code, .. } if code == ffi::SRT_EASYNCRCV => Ok(None),
                err => Err(err),
            };
        }
        let handle = Handle(sock);
        // SAFETY: libsrt wrote an address of the family it names.
        let peer = unsafe { from_sockaddr(storage.as_ptr().cast()) }.ok_or(SrtError::Closed)?;
        handle.set_bool("SRTO_RCVSYN", ffi::SRTO_RCVSYN, false)?;
        let stream_id = handle.stream_id()?;
        Ok(Some(Accepted {
            socket: Socket { handle },
            peer,
            stream_id,
        }))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // SAFETY: the id made in `bind`, released once; the socket closes after it.
        unsafe {
            ffi::srt_epoll_release(self.eid);
        }
        // The gatekeeper, and what it holds, go now; a late callback finds the slot empty.
        self.slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }
}

/// A caller the listener took.
#[derive(Debug)]
pub struct Accepted {
    pub socket: Socket,
    pub peer: SocketAddr,
    pub stream_id: String,
}

/// One SRT connection in live mode.
#[derive(Debug)]
pub struct Socket {
    handle: Handle,
}

impl Socket {
    /// One message into `buf` if one is waiting: its length; `None` if none is (it never
    /// waits); [`SrtError::Closed`] once the connection is gone. A message longer than
    /// `buf` is cut (live mode's are at most 1456 bytes).
    pub fn recv(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        let len = c_int::try_from(buf.len()).unwrap_or(c_int::MAX);
        // SAFETY: a writable buffer of at least `len` bytes.
        let n = unsafe { ffi::srt_recvmsg(self.handle.0, buf.as_mut_ptr().cast(), len) };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        match last_error("srt_recvmsg") {
            SrtError::Call { code, .. } if code == ffi::SRT_EASYNCRCV => {
                if self.handle.connected() {
                    Ok(None)
                } else {
                    Err(SrtError::Closed)
                }
            }
            _ if !self.handle.connected() => Err(SrtError::Closed),
            err => Err(err),
        }
    }

    /// Sends one message (at most 1316 bytes in live mode: seven MPEG-TS packets), without
    /// waiting: a send buffer still full of unacknowledged data is an error.
    pub fn send(&self, message: &[u8]) -> Result<()> {
        let len = c_int::try_from(message.len()).unwrap_or(c_int::MAX);
        // SAFETY: a readable buffer of `len` bytes.
        let n = unsafe { ffi::srt_send(self.handle.0, message.as_ptr().cast(), len) };
        if n == ffi::SRT_ERROR {
            return Err(if self.handle.connected() {
                last_error("srt_send")
            } else {
                SrtError::Closed
            });
        }
        Ok(())
    }

    /// Whether the connection is still up.
    pub fn is_connected(&self) -> bool {
        self.handle.connected()
    }
}

/// Calls `addr` with `stream_id`, waiting at most `wait` for the handshake, as a publisher
/// does (the sending side; `latency` is the delay it proposes). A refusal is
/// [`SrtError::Rejected`] with the listener's code.
pub fn connect(
    addr: SocketAddr,
    stream_id: &str,
    latency: Duration,
    wait: Duration,
) -> Result<Socket> {
    let handle = Handle::new()?;
    handle.set_stream_id(stream_id)?;
    let ms = |d: Duration| c_int::try_from(d.as_millis()).unwrap_or(c_int::MAX);
    handle.set_int("SRTO_LATENCY", ffi::SRTO_LATENCY, ms(latency))?;
    handle.set_int("SRTO_CONNTIMEO", ffi::SRTO_CONNTIMEO, ms(wait).max(1))?;
    let (storage, len) = to_sockaddr(addr);
    // SAFETY: a sockaddr of the given length; the socket blocks until connected or refused.
    let r = unsafe {
        ffi::srt_connect(
            handle.0,
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if r == ffi::SRT_ERROR {
        let err = last_error("srt_connect");

        // SAFETY: the socket made above.
        let reason = unsafe { ffi::srt_getrejectreason(handle.0) };
        return Err(match err {
            SrtError::Call { code, .. } if code == ffi::SRT_ECONNREJ => SrtError::Rejected(reason),
            other => other,
        });
    }
    // Connected: from here on a full send buffer is an error, never a wait.
    handle.set_bool("SRTO_SNDSYN", ffi::SRTO_SNDSYN, false)?;
    Ok(Socket { handle })
}

fn local_addr(handle: &Handle) -> Result<SocketAddr> {
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = size_of::<libc::sockaddr_storage>() as c_int;
    // SAFETY: storage for any address, and its length.
    let r = unsafe { ffi::srt_getsockname(handle.0, storage.as_mut_ptr().cast(), &mut len) };
    check("srt_getsockname", r)?;
    // SAFETY: libsrt wrote an address of the family it names.
    unsafe { from_sockaddr(storage.as_ptr().cast()) }.ok_or(SrtError::Closed)
}

fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, c_int) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as c_int)
}

/// The address behind `sa`, if it is IPv4 or IPv6.
///
/// # Safety
/// `sa` is null or points to a sockaddr whose family says how long it is.
unsafe fn from_sockaddr(sa: *const libc::sockaddr) -> Option<SocketAddr> {
    if sa.is_null() {
        return None;
    }
    match c_int::from((*sa).sa_family) {
        libc::AF_INET => {
            let sin = &*(sa as *const libc::sockaddr_in);
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            let sin6 = &*(sa as *const libc::sockaddr_in6);
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
