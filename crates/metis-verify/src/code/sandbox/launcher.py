# Metis code-sandbox launcher: runs one HumanEval program the way openai/human-eval's
# execution.py (unsafe_execute) does, and reports the outcome to the Metis parent process.
#
# argv: program path, time limit in seconds, result descriptor.
# stdin: a one-line nonce; the outcome is written after it on the result descriptor, so a
# program that exits early (os._exit(0)) or prints "passed" does not pass.
#
# As upstream: the program runs with exec() in fresh globals (so `__name__ == "__main__"`
# blocks do not run) under a SIGALRM timer of the time limit; TimeoutException gives
# "timed out", any other exception "failed: <exception>".
import os
import signal
import sys
import traceback


class TimeoutException(Exception):
    pass


def _on_alarm(signum, frame):
    raise TimeoutException("Timed out!")


def _main():
    program_path, time_limit, result_fd = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    nonce = sys.stdin.readline().strip()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    with open(program_path) as f:
        source = f.read()
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, time_limit)
    try:
        exec(compile(source, program_path, "exec"), {})
        outcome = "passed"
    except TimeoutException:
        outcome = "timed out"
    except BaseException as e:
        outcome = "failed: " + traceback.format_exception_only(type(e), e)[-1].strip()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    os.write(result_fd, (nonce + "\n" + outcome).encode("utf-8", "replace"))


_main()
