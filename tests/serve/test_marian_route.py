"""The LibreTranslate route on the real model, called the way LibreTranslate's clients call it
(plain HTTP: JSON or a form, ``q``/``source``/``target``/``format``)."""

import pytest
from fastapi.testclient import TestClient

from toolkit import registry
from toolkit.serve.app import create_app
from toolkit.serve.served import ModelSource
from toolkit.serve.service import Service, Settings


@pytest.fixture(scope="module")
def client(marian_artifact):
    service = Service(Settings(models=[ModelSource(registry.get("marian"),
                                                   artifact=str(marian_artifact))]))
    with TestClient(create_app(service)) as c:
        for _ in range(600):
            if c.get("/health").status_code == 200:
                break
            import time
            time.sleep(0.1)
        yield c


def test_translate_json_and_form_as_libretranslate_clients_send(client):
    r = client.post("/translate", json={"q": "The file could not be opened.", "source": "en",
                                        "target": "pt", "format": "text"})
    assert r.status_code == 200, r.text
    assert r.json() == {"translatedText": "O arquivo não pôde ser aberto."}
    r = client.post("/translate", data={"q": "Show hidden files", "source": "auto",
                                        "target": "pt"})
    assert r.json() == {"translatedText": "Mostrar arquivos ocultos"}
    r = client.post("/translate", json={"q": ["Show hidden files", "The file could not be "
                                              "opened."], "source": "en", "target": "pt"})
    assert r.json()["translatedText"] == ["Mostrar arquivos ocultos",
                                          "O arquivo não pôde ser aberto."]


def test_languages(client):
    assert client.get("/languages").json() == [{"code": "en", "name": "English",
                                                "targets": ["pt"]}]


@pytest.mark.parametrize("body,message", [
    ({"q": "Hello", "source": "en", "target": "de"}, "en→de is not served"),
    ({"source": "en", "target": "pt"}, "missing q"),
    ({"q": "Hello", "source": "en", "target": "pt", "format": "html"}, "format 'html'"),
    ({"q": "", "source": "en", "target": "pt"}, "empty"),
])
def test_refusals_are_libretranslate_errors(client, body, message):
    r = client.post("/translate", json=body)
    assert r.status_code == 400
    assert message in r.json()["error"]
