source benchmarks/device_preamble.sh
for x in all-to-all copy-engine; do
  python3 -m wanbench.cli generate --model a14b --weights random --size 480*832 --steps 3 --gpus 2 --ulysses 2 \
    --ulysses-exchange $x --compile --attention cudnn --output none --timeout 150 \
    --save-latents /tmp/c-$x.safetensors --json $OUT/compiled-$x.json || break
done
python3 -c "
from safetensors.torch import load_file as l; import json
a, b = (l(f'/tmp/c-{x}.safetensors')['latents'].float() for x in ('all-to-all', 'copy-engine'))
r = {'rel_error': ((a - b).norm() / a.norm()).item(), 'identical': bool((a == b).all())}
print(r); json.dump(r, open('$OUT/compiled-check.json', 'w'))"
