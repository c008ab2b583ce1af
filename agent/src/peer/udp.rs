//! UDP sockets for sessions: non-blocking, with large kernel buffers so a
//! burst of SCTP packets is not dropped before the driver task reads it.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

/// Wanted SO_RCVBUF / SO_SNDBUF size.
pub(crate) const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// Binds a UDP socket on `addr` with 4 MiB buffers. The kernel caps plain
/// SO_RCVBUF/SO_SNDBUF at `net.core.{r,w}mem_max`; with CAP_NET_ADMIN the
/// FORCE variants go past it. Falling short is logged, not fatal.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    UdpSocket::from_std(bind_std(addr)?)
}

/// [`bind`]'s socket as a non-blocking std socket (for code outside a
/// tokio runtime, e.g. the tunnel benchmark's raw str0m baseline).
pub fn bind_std(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    set_buffers(&socket);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn set_buffers(socket: &Socket) {
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    // Linux reports twice the size asked for (bookkeeping overhead).
    if socket.recv_buffer_size().unwrap_or(0) < SOCKET_BUFFER {
        force(socket, libc::SO_RCVBUFFORCE);
    }
    if socket.send_buffer_size().unwrap_or(0) < SOCKET_BUFFER {
        force(socket, libc::SO_SNDBUFFORCE);
    }
    let (r, s) = (
        socket.recv_buffer_size().unwrap_or(0),
        socket.send_buffer_size().unwrap_or(0),
    );
    if r < SOCKET_BUFFER || s < SOCKET_BUFFER {
        tracing::debug!(
            recv = r,
            send = s,
            "UDP socket buffers below 4 MiB (raise net.core.rmem_max/wmem_max or grant CAP_NET_ADMIN)"
        );
    }
}

fn force(socket: &Socket, option: libc::c_int) {
    use std::os::fd::AsRawFd;
    let size = SOCKET_BUFFER as libc::c_int;
    // SAFETY: a valid fd and a pointer to a c_int of the stated length.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_with_buffers_asked_for() {
        let socket = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(socket.local_addr().unwrap().port() != 0);
        let sock = socket2::SockRef::from(&socket);
        // 4 MiB when allowed (root may force past rmem_max/wmem_max).
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(sock.recv_buffer_size().unwrap() >= SOCKET_BUFFER);
            assert!(sock.send_buffer_size().unwrap() >= SOCKET_BUFFER);
        } else {
            assert!(sock.recv_buffer_size().unwrap() > 0);
        }
    }
}
