// Engine tasks (target capture, AR) are cancellable and timed out like generation jobs: a task queued behind a long
// one does not run once its request is cancelled, and a running task that checks its control stops at the deadline
// (504) or on cancellation. No model needed.

import Foundation
@testable import NLAServer
import NLAWire
import Testing

@Suite struct EngineTaskTests {
    /// A task body that runs until its control says stop (`stopped` counts that), or gives up after 600 s.
    /// The tests assert why it ended, never how long the wall clock took: under a full parallel test run
    /// the awaiting test can wait minutes for a free cooperative thread (CI: 141 s for a 0.5 s deadline).
    static func spin(_ c: TaskControl, started: Counter, stopped: Counter) -> Int {
        _ = started.next()
        let t0 = Date()
        while Date().timeIntervalSince(t0) < 600 {
            if c.isStopped { _ = stopped.next(); break }
            usleep(1000)
        }
        return 1
    }

    @Test func aRunningTaskStopsAtTheDeadline() async throws {
        let e = Engine(maxQueue: 8, timeout: 0.5)
        e.start()
        defer { e.stop() }
        let started = Counter(), stopped = Counter()
        do {
            _ = try await e.run { (c: TaskControl) -> Int in EngineTaskTests.spin(c, started: started, stopped: stopped) }
            Issue.record("a task past its deadline returned a result")
        } catch let a as APIError {
            #expect(a.status == 504, "\(a)")
        }
        #expect(started.value == 1)
        #expect(stopped.value == 1, "the task was not told to stop at its 0.5 s deadline")
    }

    @Test func cancelledTasksStopAndQueuedOnesNeverRun() async throws {
        let e = Engine(maxQueue: 8, timeout: 600)
        e.start()
        defer { e.stop() }
        let started = Counter(), ran = Counter(), stopped = Counter()
        let long = Task { try await e.run { (c: TaskControl) -> Int in EngineTaskTests.spin(c, started: started, stopped: stopped) } }
        for _ in 0..<60_000 where started.value == 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(started.value == 1, "the first task did not start")
        // Queued behind the running one, then its request goes away.
        let queued = Task { try await e.run { () -> Int in _ = ran.next(); return 2 } }
        try await Task.sleep(for: .milliseconds(100))
        queued.cancel()
        long.cancel()
        let r1 = await long.result, r2 = await queued.result
        #expect(stopped.value == 1, "the running task was not told to stop when its request was cancelled")
        for r in [r1, r2] {
            switch r {
            case .success: Issue.record("a cancelled task returned a result")
            case .failure(let err): #expect(err is EngineError, "\(err)")
            }
        }
        #expect(ran.value == 0, "a task whose request was cancelled still ran")
        // The engine still serves.
        #expect(try await e.run { () -> Int in 7 } == 7)
    }
}
