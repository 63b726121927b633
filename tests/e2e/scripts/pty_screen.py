"""Runs a command on a pseudo-terminal and prints what a person would have seen on it.

The command's output goes through pyte, a VT100 terminal emulator, with a scroll-back
history, so cursor movement and line erasing (progress bars redrawing themselves) act as on a
real terminal: a log line a redraw overwrote is gone from the result, as it would be from the
screen. Prints every row of the history and the final screen, right-trimmed, one per line,
then `EXIT <code>`.

usage: pty_screen.py COLUMNS COMMAND [ARG...]
"""

import fcntl
import os
import pty
import struct
import sys
import termios

import pyte

columns = int(sys.argv[1])
command = sys.argv[2:]
rows = 40

pid, fd = pty.fork()
if pid == 0:
    os.execvp(command[0], command)

fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
screen = pyte.HistoryScreen(columns, rows, history=100000)
screen.set_mode(pyte.modes.LNM)  # a bare \n also returns the carriage, as the tty's onlcr does
stream = pyte.ByteStream(screen)
while True:
    try:
        data = os.read(fd, 65536)
    except OSError:  # EIO: the child closed the terminal
        break
    if not data:
        break
    stream.feed(data)
_, status = os.waitpid(pid, 0)


def text(line):
    return "".join(line[x].data for x in range(columns)).rstrip()


for line in screen.history.top:
    print(text(line))
for y in range(rows):
    print(text(screen.buffer[y]))
print(f"EXIT {os.waitstatus_to_exitcode(status)}")
