# Body of a `cargo xtask vm-test` run (xtask/src/vm/mod.rs writes it, after the variables it
# sets, to $VM_OUT/guest.sh). Runs inside the guest as PID 1 after init.sh (or directly on the
# host for `--kernel host`): doctor, one agent start to read the programs' verified instruction
# counts, then each integration test binary. Everything lands in $VM_OUT; the host parses it.
export PATH="$VM_PATH"
export HOME=/root TMPDIR=/tmp
cd /tmp
uname -r > "$VM_OUT/uname"
uname -v > "$VM_OUT/uname-v"
echo "vm-guest: $(uname -r), mode $VM_MODE"

"$WSGUARD_BIN" doctor > "$VM_OUT/doctor.txt" 2>&1
echo $? > "$VM_OUT/doctor.rc"
cat "$VM_OUT/doctor.txt"

# One agent of its own, in the mode under test: does the probe load, and at what verifier cost?
reuse=
probe_dir=/tmp/wsguard-vm-probe
pin=/sys/fs/bpf/wsguard-vm-$$
mkdir -p "$probe_dir"
chmod 755 "$probe_dir"
{
    printf '[agent]\ninterval = "1s"\nstate_dir = "%s/state"\n' "$probe_dir"
    printf '[api]\nlisten = "127.0.0.1:%s"\n' "$VM_API_PORT"
    printf '[probe]\npin_path = "%s"\n' "$pin"
    [ -n "$VM_MODE_KEY" ] && printf 'mode = "%s"\n' "$VM_MODE_KEY"
} > "$probe_dir/wsguard.toml"
"$WSGUARD_BIN" run --fresh --config "$probe_dir/wsguard.toml" > "$VM_OUT/agent.log" 2>&1 &
agent=$!
echo $agent > "$VM_OUT/agent.pid"
loaded=no
i=0
while [ $i -lt "$VM_LOAD_WAIT" ]; do
    if ! kill -0 $agent 2>/dev/null; then break; fi
    if "$WSGUARD_BIN" snapshot --json --api "http://127.0.0.1:$VM_API_PORT" > "$VM_OUT/snapshot.json" 2>/dev/null; then
        loaded=yes
        break
    fi
    sleep 1
    i=$((i + 1))
done
bpftool prog show --json > "$VM_OUT/progs.json" 2>"$VM_OUT/progs.err"
# The programs the agent holds, with the verifier's count (fdinfo has it since 5.16; bpftool
# 7.1 does not print it).
for f in /proc/$agent/fdinfo/*; do
    id=$(sed -n 's/^prog_id:[[:space:]]*//p' "$f" 2>/dev/null)
    [ -n "$id" ] && echo "$id $(sed -n 's/^verified_insns:[[:space:]]*//p' "$f")"
done | sort -u > "$VM_OUT/prog-insns.txt"
kill -TERM $agent 2>/dev/null
wait $agent
echo $? > "$VM_OUT/agent.rc"
"$WSGUARD_BIN" detach --config "$probe_dir/wsguard.toml" > /dev/null 2>&1
rm -rf "$pin" "$probe_dir"
echo $loaded > "$VM_OUT/loaded"
echo "vm-guest: probe loaded: $loaded"

# The probe the agent chose (the snapshot is pretty-printed JSON: the first "mode" after "probe").
chosen=$(awk '/"probe": [{]/ { p = 1 } p && /"mode":/ { gsub(/[",]/, "", $2); print $2; exit }' "$VM_OUT/snapshot.json" 2>/dev/null)
case " $VM_REUSE_PROBES " in
    *" $chosen "*) [ -n "$chosen" ] && reuse=$chosen ;;
esac
if [ $loaded = yes ] && [ -n "$reuse" ]; then
    # `auto` picked a probe whose tests already passed on this kernel in this run.
    echo "$reuse" > "$VM_OUT/tests-shared-with"
    echo "vm-guest: $VM_MODE chose $reuse, whose tests already passed here: not run again"
elif [ $loaded = yes ]; then
    for t in $VM_TESTS; do
        name=$(basename "$t" | sed 's/-[0-9a-f]*$//')
        echo "vm-guest: $name"
        "$t" --test-threads=1 $VM_TEST_ARGS > "$VM_OUT/test-$name.log" 2>&1
        echo $? > "$VM_OUT/test-$name.rc"
        tail -n 3 "$VM_OUT/test-$name.log"
    done
else
    sed -n '1,40p' "$VM_OUT/agent.log"
fi
echo finished > "$VM_OUT/finished"
sync
if [ -z "$VM_ON_HOST" ]; then
    echo o > /proc/sysrq-trigger
    sleep 30
fi
