package session

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// openPTY allocates a pseudo-terminal: the master side, which the
// supervisor reads the command's output from and writes its input to, and
// the terminal side, which becomes the command's stdin, stdout, stderr
// and controlling terminal. It opens /dev/ptmx itself (posix_openpt,
// unlockpt) and reaches the terminal side with TIOCGPTPEER where the
// kernel has it (no path lookup: right in any mount namespace), through
// /dev/pts/N elsewhere.
func openPTY() (master, tty *os.File, err error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/ptmx: %w (is devpts mounted at /dev/pts?)", err)
	}
	// Non-blocking, so that os.File reads through the poller and Close
	// interrupts a read in progress.
	master = os.NewFile(uintptr(fd), "/dev/ptmx")
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("unlock pseudo-terminal: %w", err)
	}
	peer, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
	if errno == 0 {
		return master, os.NewFile(peer, "/dev/pts/peer"), nil
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("pseudo-terminal number: %w", err)
	}
	path := "/dev/pts/" + strconv.FormatUint(uint64(n), 10)
	tty, err = os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("open %s: %w", path, err)
	}
	return master, tty, nil
}

// setWindowSize tells the terminal its size; the kernel sends SIGWINCH
// to its foreground process group.
func setWindowSize(f *os.File, w WindowSize) error {
	if w.Rows == 0 || w.Cols == 0 {
		return nil // unknown: keep what it has
	}
	// Through SyscallConn: Fd would put the file back in blocking mode.
	rc, err := f.SyscallConn()
	if err == nil {
		cerr := rc.Control(func(fd uintptr) {
			err = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: w.Rows, Col: w.Cols})
		})
		if cerr != nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("set terminal size %dx%d: %w", w.Cols, w.Rows, err)
	}
	return nil
}
