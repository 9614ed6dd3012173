//! The code sandbox on well-behaved programs: what a HumanEval solution may do still works
//! (files in its own directory, threads, output), failures read as upstream's, and crashes
//! are named.

use metis_verify::code::sandbox::{Outcome, RunResult, Sandbox, SandboxConfig};

fn failed_with(result: &RunResult, needle: &str) -> bool {
    matches!(&result.outcome, Outcome::Failed(why) if why.contains(needle))
}

#[test]
fn well_behaved_programs_run_normally() {
    let sandbox = Sandbox::new(&SandboxConfig::default())
        .unwrap_or_else(|e| panic!("this machine must support the sandbox: {e}"));
    let checks = [
        // The working directory is writable, and the sample is alone in its pid namespace.
        "open('scratch.txt', 'w').write('ok')\nassert open('scratch.txt').read() == 'ok'\n\
         import os\nassert [p for p in os.listdir('/proc') if p.isdigit()] == ['1'], os.listdir('/proc')\n",
        // Threads are allowed (only new processes are refused).
        "import threading\nout = []\nt = threading.Thread(target=lambda: out.append(1))\n\
         t.start()\nt.join()\nassert out == [1]\n",
        // Output is captured; __name__ is not "__main__" (exec in fresh globals, as upstream).
        "print('hello')\nif __name__ == '__main__':\n    raise SystemExit(3)\n",
    ];
    for program in checks {
        let r = sandbox.run(program).unwrap();
        assert_eq!(r.outcome, Outcome::Passed, "{program}\n{r:?}");
    }
    let printed = sandbox.run("print('hello')\n").unwrap();
    assert_eq!(printed.stdout.text(), "hello\n");
    let failing = sandbox.run("assert 1 == 2, 'nope'\n").unwrap();
    assert_eq!(
        failing.outcome,
        Outcome::Failed("AssertionError: nope".into())
    );
    let syntax = sandbox.run("def f(:\n").unwrap();
    assert!(failed_with(&syntax, "SyntaxError"), "{syntax:?}");
    let crash = sandbox.run("import ctypes\nctypes.string_at(0)\n").unwrap();
    assert!(
        matches!(&crash.outcome, Outcome::Killed(s) if s == "SIGSEGV"),
        "{crash:?}"
    );
    assert!(sandbox.interpreter().version.starts_with("Python 3"));
    assert!(sandbox.interpreter().path.is_absolute());
}
