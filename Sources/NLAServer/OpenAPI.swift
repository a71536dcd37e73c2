// The hand-written OpenAPI document of `nla serve` (served at /openapi.yaml and, converted, /openapi.json).

import Foundation
import Yams

enum OpenAPI {
    static func json() throws -> Data {
        let obj = try Yams.load(yaml: yaml)
        return try JSONSerialization.data(withJSONObject: obj as Any, options: [.sortedKeys, .withoutEscapingSlashes])
    }

    static let yaml = #"""
openapi: 3.0.3
info:
  title: nla serve
  version: "1.0"
  description: |
    Natural Language Autoencoders on the CPU: SGLang-compatible /generate, the NLA JSON API (field names of the
    CLI's --json outputs) and the page at /. With --api-key every request except GET / needs
    `Authorization: Bearer K` (401 otherwise). Errors are {"error": {"message", "code"}}.
servers:
  - url: /
components:
  securitySchemes:
    bearer:
      type: http
      scheme: bearer
  schemas:
    Error:
      type: object
      required: [error]
      properties:
        error:
          type: object
          required: [message, code]
          properties:
            message: {type: string}
            code: {type: integer}
    SGLangSampling:
      type: object
      description: SGLang sampling_params (defaults as SGLang's; unknown keys are ignored).
      properties:
        temperature: {type: number, minimum: 0, default: 1}
        max_new_tokens: {type: integer, minimum: 0, default: 128}
        top_p: {type: number, exclusiveMinimum: true, minimum: 0, maximum: 1, default: 1}
        top_k: {type: integer, minimum: -1, default: -1}
        stop_token_ids: {type: array, items: {type: integer, minimum: 0}}
        skip_special_tokens: {type: boolean, default: true}
        ignore_eos: {type: boolean, default: false}
        sampling_seed: {type: integer, minimum: 0}
        n: {type: integer, enum: [1]}
        stop:
          description: 'stop strings (at most 16, each at most 256 bytes); generation ends when the decoded text contains one,
            the text is cut before it and finish_reason is {"type":"stop","matched":"<string>"}'
          oneOf:
            - type: string
            - type: array
              items: {type: string}
    GenerateRequest:
      type: object
      description: Exactly one of input_embeds, text or input_ids; a list of them is a batch (the reply is then a list).
      properties:
        input_embeds:
          description: "[T][d] float32 rows (scaled input embeddings, as SGLang takes them), or a list of such"
          type: array
          items:
            type: array
            items: {}
        text:
          oneOf:
            - type: string
            - type: array
              items: {type: string}
        input_ids:
          type: array
          items: {}
        sampling_params:
          oneOf:
            - $ref: '#/components/schemas/SGLangSampling'
            - type: array
              items: {$ref: '#/components/schemas/SGLangSampling'}
        model:
          type: string
          description: Which loaded model generates (model | target | av); default av with an NLA pair, else model.
        stream:
          type: boolean
          default: false
          description: 'server-sent events as SGLang sends them: "data: {GenerateReply so far}" per new token (cumulative text and
            output_ids; finish_reason null until the last token; "index" in a batch), then "data: [DONE]"'
    GenerateReply:
      type: object
      required: [text, output_ids, meta_info]
      properties:
        text: {type: string}
        output_ids: {type: array, items: {type: integer}}
        meta_info:
          type: object
          required: [id, prompt_tokens, completion_tokens, cached_tokens, finish_reason, e2e_latency]
          properties:
            id: {type: string}
            prompt_tokens: {type: integer}
            completion_tokens: {type: integer}
            cached_tokens: {type: integer, description: leading prompt rows whose KV came from the prefix cache}
            e2e_latency: {type: number}
            finish_reason:
              type: object
              required: [type]
              properties:
                type: {type: string, enum: [stop, length]}
                matched:
                  description: the stop id, or the stop string
                  oneOf:
                    - type: integer
                    - type: string
                length: {type: integer}
    Sampling:
      type: object
      properties:
        max_new_tokens: {type: integer, minimum: 0}
        temperature: {type: number, minimum: 0, default: 0}
        top_p: {type: number, exclusiveMinimum: true, minimum: 0, maximum: 1}
        top_k: {type: integer, minimum: 0}
        seed: {type: integer, minimum: 0}
    ChatRequest:
      allOf:
        - $ref: '#/components/schemas/Sampling'
        - type: object
          required: [messages]
          properties:
            messages:
              type: array
              minItems: 1
              items:
                type: object
                required: [role, content]
                properties:
                  role: {type: string, enum: [user, assistant, system]}
                  content: {type: string}
            stream: {type: boolean, default: true}
    ChatReply:
      type: object
      required: [prompt_ids, ids, text, prompt_length, conversation_ids, tokens, finish_reason]
      properties:
        prompt_ids: {type: array, items: {type: integer}}
        ids: {type: array, items: {type: integer}, description: reply ids (ending with the stop id when it stopped on one)}
        text: {type: string}
        prompt_length: {type: integer}
        conversation_ids: {type: array, items: {type: integer}}
        tokens: {type: array, items: {type: string}}
        finish_reason: {type: string, enum: [stop, length]}
    ExplainRequest:
      allOf:
        - $ref: '#/components/schemas/Sampling'
        - type: object
          properties:
            ids: {type: array, items: {type: integer, minimum: 0}, description: the conversation's token ids}
            prompt_length: {type: integer, minimum: 0}
            prompt: {type: string, description: used when ids is absent}
            chat: {type: boolean, default: true}
            reply: {type: string}
            max_reply_tokens: {type: integer, minimum: 0, default: 64}
            positions:
              description: '"all", a spec like "4-" or "10,12,15", or a list of positions'
              oneOf:
                - type: string
                - type: array
                  items: {type: integer, minimum: 0}
            fve_baseline: {type: number}
            stream: {type: boolean, default: false, description: server-sent events progress, position and report}
    ExplainPosition:
      type: object
      required: [position, segment, token, id, norm, mse_nrm, cos, fve_nrm, explanation, text, warnings]
      properties:
        position: {type: integer}
        segment: {type: string, enum: [PROMPT, REPLY]}
        token: {type: string}
        id: {type: integer}
        norm: {type: number}
        mse_nrm: {type: number, nullable: true}
        cos: {type: number, nullable: true}
        fve_nrm: {type: number, nullable: true}
        explanation: {type: string, nullable: true}
        text: {type: string, nullable: true}
        warnings: {type: array, items: {type: string}}
        error: {type: string}
    ExplainReport:
      type: object
      description: the JSON of `nla explain --json`
      required: [target, av, ar, layer, prompt_length, ids, positions, summary, fve_baseline, batch]
      properties:
        target: {type: string}
        av: {type: string}
        ar: {type: string}
        layer: {type: integer}
        prompt_length: {type: integer}
        ids: {type: array, items: {type: integer}}
        positions: {type: array, items: {$ref: '#/components/schemas/ExplainPosition'}}
        summary: {type: object}
        fve_baseline: {type: number, nullable: true}
        batch: {type: integer}
    VerbalizeRequest:
      allOf:
        - $ref: '#/components/schemas/Sampling'
        - type: object
          properties:
            vector: {type: array, items: {type: number}}
            vectors: {type: array, items: {type: array, items: {type: number}}}
    Verbalization:
      type: object
      required: [ids, text, explanation]
      properties:
        ids: {type: array, items: {type: integer}}
        text: {type: string}
        explanation: {type: string, nullable: true}
    ReconstructRequest:
      type: object
      required: [explanation]
      properties:
        explanation: {type: string}
    Reconstruction:
      type: object
      required: [vector, norm]
      properties:
        vector: {type: array, items: {type: number}}
        norm: {type: number}
    ScoreRequest:
      type: object
      required: [explanation, gold]
      properties:
        explanation: {type: string}
        gold: {type: array, items: {type: number}}
        fve_baseline: {type: number}
    Score:
      type: object
      required: [mse_nrm, cos, fve_nrm]
      properties:
        mse_nrm: {type: number}
        cos: {type: number}
        fve_nrm: {type: number, nullable: true}
  responses:
    BadRequest:
      description: invalid input (the message names the field)
      content:
        application/json:
          schema: {$ref: '#/components/schemas/Error'}
    NotFound:
      description: the endpoint needs models this server did not load
      content:
        application/json:
          schema: {$ref: '#/components/schemas/Error'}
    TooLarge:
      description: request body over --max-body-bytes
      content:
        application/json:
          schema: {$ref: '#/components/schemas/Error'}
    QueueFull:
      description: the bounded queue is full; retry later
      content:
        application/json:
          schema: {$ref: '#/components/schemas/Error'}
    Timeout:
      description: the request ran past --timeout
      content:
        application/json:
          schema: {$ref: '#/components/schemas/Error'}
    Unauthorized:
      description: missing or wrong bearer token (with --api-key)
      content:
        application/json:
          schema: {$ref: '#/components/schemas/Error'}
security:
  - bearer: []
  - {}
paths:
  /:
    get:
      summary: The page (HTML, no external resources)
      security: []
      responses:
        "200":
          description: the page
          content:
            text/html: {schema: {type: string}}
  /health:
    get:
      summary: Liveness and engine counters
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema:
                type: object
                required: [status, queue, active, prefix_cache]
                properties:
                  status: {type: string, enum: [ok]}
                  uptime_s: {type: number}
                  queue: {type: integer}
                  active: {type: integer}
                  steps: {type: integer}
                  tokens: {type: integer}
                  prefix_cache:
                    type: object
                    properties:
                      entries: {type: integer}
                      hits: {type: integer}
                      hit_tokens: {type: integer}
        "401": {$ref: '#/components/responses/Unauthorized'}
  /openapi.yaml:
    get:
      summary: This document (YAML)
      responses:
        "200":
          description: the document
          content:
            application/yaml: {schema: {type: object}}
        "401": {$ref: '#/components/responses/Unauthorized'}
  /openapi.json:
    get:
      summary: This document (JSON)
      responses:
        "200":
          description: the document
          content:
            application/json: {schema: {type: object}}
        "401": {$ref: '#/components/responses/Unauthorized'}
  /api/models:
    get:
      summary: The loaded models
      responses:
        "200":
          description: models
          content:
            application/json:
              schema:
                type: object
                required: [mode, models]
                properties:
                  mode: {type: string, enum: [nla, generate]}
                  models:
                    type: array
                    items:
                      type: object
                      required: [name, path, hidden_size, layers, vocab_size]
                      properties:
                        name: {type: string}
                        path: {type: string}
                        hidden_size: {type: integer}
                        layers: {type: integer}
                        vocab_size: {type: integer}
                        context: {type: integer}
                  layer: {type: integer}
                  fve_baseline: {type: number, nullable: true}
                  generate_model: {type: string}
                  max_batch: {type: integer}
                  max_new_tokens_limit: {type: integer}
        "401": {$ref: '#/components/responses/Unauthorized'}
  /generate:
    post:
      summary: SGLang-compatible generation (what the reference NLAClient sends)
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: '#/components/schemas/GenerateRequest'}
      responses:
        "200":
          description: one reply, or a list for a batch (with stream true, server-sent events)
          content:
            application/json:
              schema:
                oneOf:
                  - $ref: '#/components/schemas/GenerateReply'
                  - type: array
                    items: {$ref: '#/components/schemas/GenerateReply'}
            text/event-stream:
              schema: {type: string}
        "400": {$ref: '#/components/responses/BadRequest'}
        "401": {$ref: '#/components/responses/Unauthorized'}
        "404": {$ref: '#/components/responses/NotFound'}
        "413": {$ref: '#/components/responses/TooLarge'}
        "429": {$ref: '#/components/responses/QueueFull'}
        "504": {$ref: '#/components/responses/Timeout'}
  /api/chat:
    post:
      summary: Chat with the target (server-sent events token / done / error; JSON with stream false)
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: '#/components/schemas/ChatRequest'}
      responses:
        "200":
          description: 'text/event-stream: "token" {id, text} per token, then "done" (a ChatReply) or "error"'
          content:
            text/event-stream:
              schema:
                type: object
                required: [event, data]
                properties:
                  event: {type: string, enum: [token, done, error]}
                  data: {type: string, description: JSON of the event}
            application/json: {schema: {$ref: '#/components/schemas/ChatReply'}}
        "400": {$ref: '#/components/responses/BadRequest'}
        "401": {$ref: '#/components/responses/Unauthorized'}
        "413": {$ref: '#/components/responses/TooLarge'}
        "429": {$ref: '#/components/responses/QueueFull'}
        "504": {$ref: '#/components/responses/Timeout'}
  /api/explain:
    post:
      summary: Explain positions of a conversation (the JSON of `nla explain --json`)
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: '#/components/schemas/ExplainRequest'}
      responses:
        "200":
          description: the report (or, with stream true, events progress / position / report / error)
          content:
            application/json: {schema: {$ref: '#/components/schemas/ExplainReport'}}
            text/event-stream:
              schema:
                type: object
                required: [event, data]
                properties:
                  event: {type: string, enum: [progress, position, report, error]}
                  data: {type: string, description: JSON of the event}
        "400": {$ref: '#/components/responses/BadRequest'}
        "401": {$ref: '#/components/responses/Unauthorized'}
        "404": {$ref: '#/components/responses/NotFound'}
        "413": {$ref: '#/components/responses/TooLarge'}
        "429": {$ref: '#/components/responses/QueueFull'}
        "504": {$ref: '#/components/responses/Timeout'}
  /api/verbalize:
    post:
      summary: Explain activation vectors with the AV (`nla verbalize --json`)
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: '#/components/schemas/VerbalizeRequest'}
      responses:
        "200":
          description: one result per vector
          content:
            application/json:
              schema:
                type: array
                items: {$ref: '#/components/schemas/Verbalization'}
        "400": {$ref: '#/components/responses/BadRequest'}
        "401": {$ref: '#/components/responses/Unauthorized'}
        "404": {$ref: '#/components/responses/NotFound'}
        "413": {$ref: '#/components/responses/TooLarge'}
        "429": {$ref: '#/components/responses/QueueFull'}
        "504": {$ref: '#/components/responses/Timeout'}
  /api/reconstruct:
    post:
      summary: Predict the vector an explanation describes (`nla reconstruct --json`)
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: '#/components/schemas/ReconstructRequest'}
      responses:
        "200":
          description: the vector
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Reconstruction'}
        "400": {$ref: '#/components/responses/BadRequest'}
        "401": {$ref: '#/components/responses/Unauthorized'}
        "404": {$ref: '#/components/responses/NotFound'}
        "413": {$ref: '#/components/responses/TooLarge'}
        "429": {$ref: '#/components/responses/QueueFull'}
  /api/score:
    post:
      summary: Score an explanation against a gold vector (`nla score --json`)
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: '#/components/schemas/ScoreRequest'}
      responses:
        "200":
          description: the score
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Score'}
        "400": {$ref: '#/components/responses/BadRequest'}
        "401": {$ref: '#/components/responses/Unauthorized'}
        "404": {$ref: '#/components/responses/NotFound'}
        "413": {$ref: '#/components/responses/TooLarge'}
        "429": {$ref: '#/components/responses/QueueFull'}
"""#
}
